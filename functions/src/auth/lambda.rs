//! Callers of the Lambda functions: the API Gateway authorizer context of a request (JWT claims
//! `dspy_projects` and `dspy_role`, a Lambda or Cognito authorizer's context with the same keys,
//! or an IAM caller mapped by [`LambdaAuth`]).

use axum::http::StatusCode;
use serde_json::Value;

use super::scope::{scope_from_claim, scope_from_value};
use super::{Principal, Role, Scope};
use crate::error::ApiError;

/// How Lambda maps callers that come without `dspy_*` claims: an `AWS_IAM`-authorized caller
/// gets `DSPY_STORAGE_IAM_ROLE` (default `reader`) on `DSPY_STORAGE_IAM_PROJECTS` (default `*`);
/// the IAM policy's `execute-api:Invoke` resources decide which routes it reaches at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaAuth {
    pub iam_role: Role,
    pub iam_projects: Scope,
}

impl Default for LambdaAuth {
    fn default() -> Self {
        LambdaAuth {
            iam_role: Role::Reader,
            iam_projects: Scope::All,
        }
    }
}

impl LambdaAuth {
    pub fn from_env() -> Result<LambdaAuth, String> {
        let mut auth = LambdaAuth::default();
        if let Some(r) = std::env::var("DSPY_STORAGE_IAM_ROLE")
            .ok()
            .filter(|s| !s.is_empty())
        {
            auth.iam_role =
                Role::parse(&r).ok_or("DSPY_STORAGE_IAM_ROLE must be reader, writer or admin")?;
        }
        if let Some(p) = std::env::var("DSPY_STORAGE_IAM_PROJECTS")
            .ok()
            .filter(|s| !s.is_empty())
        {
            auth.iam_projects =
                scope_from_claim(&p).map_err(|e| format!("DSPY_STORAGE_IAM_PROJECTS: {e}"))?;
        }
        Ok(auth)
    }

    /// The caller of a Lambda request, from its API Gateway request context.
    pub(super) fn principal(&self, parts: &http::request::Parts) -> Result<Principal, ApiError> {
        use lambda_http::request::RequestContext;
        use lambda_http::RequestExt;
        let unauthenticated = || {
            ApiError::unauthenticated(
                "the request carries no authorizer context (JWT, Lambda or IAM)",
            )
        };
        let ctx = parts
            .extensions
            .request_context_ref()
            .ok_or_else(unauthenticated)?;
        let authorizer = match ctx {
            RequestContext::ApiGatewayV2(c) => c.authorizer.as_ref(),
            RequestContext::ApiGatewayV1(c) => Some(&c.authorizer),
            _ => None,
        };
        if let Some(a) = authorizer {
            // HTTP API JWT authorizer: claims as strings.
            if let Some(jwt) = &a.jwt {
                let name = jwt
                    .claims
                    .get("sub")
                    .map(|s| format!("jwt sub {s}"))
                    .unwrap_or_else(|| "jwt".into());
                return from_claims(
                    name,
                    jwt.claims
                        .get("dspy_projects")
                        .map(|s| Value::String(s.clone())),
                    jwt.claims.get("dspy_role").map(String::as_str),
                );
            }
            // REST API Cognito authorizer (`claims`) or a Lambda authorizer's context.
            let fields = a
                .fields
                .get("claims")
                .and_then(Value::as_object)
                .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_else(|| a.fields.clone());
            if fields.contains_key("dspy_role") || fields.contains_key("dspy_projects") {
                let name = fields
                    .get("sub")
                    .or_else(|| fields.get("principalId"))
                    .and_then(Value::as_str)
                    .map(|s| format!("authorizer {s}"))
                    .unwrap_or_else(|| "authorizer".into());
                return from_claims(
                    name,
                    fields.get("dspy_projects").cloned(),
                    fields.get("dspy_role").and_then(Value::as_str),
                );
            }
            if let Some(iam) = &a.iam {
                let who = iam
                    .user_arn
                    .clone()
                    .or_else(|| iam.caller_id.clone())
                    .unwrap_or_else(|| "unknown".into());
                return Ok(self.iam_principal(who));
            }
        }
        if let RequestContext::ApiGatewayV1(c) = ctx {
            if let Some(arn) = &c.identity.user_arn {
                return Ok(self.iam_principal(arn.clone()));
            }
        }
        Err(unauthenticated())
    }

    fn iam_principal(&self, who: String) -> Principal {
        Principal::new(
            format!("iam {who}"),
            self.iam_projects.clone(),
            self.iam_role,
        )
    }
}

fn from_claims(
    name: String,
    projects: Option<Value>,
    role: Option<&str>,
) -> Result<Principal, ApiError> {
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m);
    let role = role.and_then(Role::parse).ok_or_else(|| {
        forbidden("the caller's dspy_role claim is missing or not reader, writer or admin".into())
    })?;
    let scope = projects
        .ok_or_else(|| forbidden("the caller has no dspy_projects claim".into()))
        .and_then(|v| scope_from_value(&v).map_err(|e| forbidden(format!("dspy_projects: {e}"))))?;
    Ok(Principal::new(name, scope, role))
}
