//! One module per page. Each handler: who is looking ([`Ctx`]), the project switcher's list
//! (`GET /projects`), then the API reads of its page, rendered.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

use crate::api::{ApiError, ApiResult};
use crate::layout::{self, Nav};
use crate::session::Ctx;
use crate::Ui;

pub mod diff;
pub mod login;
pub mod monitoring;
pub mod program;
pub mod search;
pub mod signature;
pub mod signatures;

/// Query parameters of a page.
pub type Params = HashMap<String, String>;

pub(crate) fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The caller and the header of a page; a caller who must sign in first is sent there.
pub(crate) async fn begin(
    ui: &Ui,
    headers: &HeaderMap,
    uri: &Uri,
    project: Option<&str>,
) -> Result<(Ctx, Nav), Response> {
    let ctx = Ctx::of(ui, headers);
    if !ctx.signed_in() {
        return Err(layout::to_login(
            &ctx,
            uri.path_and_query().map(|p| p.as_str()),
        ));
    }
    match nav(ui, &ctx, project).await {
        Ok(nav) => Ok((ctx, nav)),
        Err(e) => {
            let nav = Nav {
                projects: vec![],
                project: project.unwrap_or("default").to_owned(),
            };
            Err(layout::error_page(&ctx, &nav, &e))
        }
    }
}

/// The projects the caller may see and the one to show: the one asked for, else `default` when
/// the caller may see it (or no project exists yet), else the caller's first.
pub(crate) async fn nav(ui: &Ui, ctx: &Ctx, project: Option<&str>) -> ApiResult<Nav> {
    let answer = ui.api.get("/projects", ctx.token()).await?;
    let projects: Vec<String> = answer["projects"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let project = match project {
        Some(p) => p.to_owned(),
        None if projects.is_empty() || projects.iter().any(|p| p == "default") => {
            "default".to_owned()
        }
        None => projects[0].clone(),
    };
    Ok(Nav { projects, project })
}

/// An API request a form makes.
pub(crate) struct Call {
    pub method: Method,
    pub uri: String,
    pub body: Option<Value>,
}

/// What became of a form's API request.
pub(crate) enum Submitted {
    Done { ctx: Ctx, nav: Nav, answer: Value },
    Refused { ctx: Ctx, nav: Nav, error: ApiError },
}

/// Runs a form: the caller (signed in), the form's CSRF token, then its API request. `Err`: a
/// response to send as it is (to the sign-in form, or the CSRF refusal).
pub(crate) async fn submit(
    ui: &Ui,
    (headers, uri): (&HeaderMap, &Uri),
    form: &Params,
    project: Option<&str>,
    call: Call,
) -> Result<Submitted, Response> {
    let (ctx, nav) = begin(ui, headers, uri, project).await?;
    if let Some(r) = ctx.csrf_refusal(param(form, "csrf")) {
        return Err(r);
    }
    match ui
        .api
        .json(call.method, &call.uri, ctx.token(), call.body.as_ref())
        .await
    {
        Ok(answer) => Ok(Submitted::Done { ctx, nav, answer }),
        Err(e) if e.status == StatusCode::UNAUTHORIZED && ctx.sign_in => {
            Err(layout::to_login(&ctx, None))
        }
        Err(error) => Ok(Submitted::Refused { ctx, nav, error }),
    }
}
