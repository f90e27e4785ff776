//! Who is looking at a page, and the CSRF guard of every form.
//!
//! - **Sign-in**: the token typed into the sign-in form is kept in the cookie `dspy_token`
//!   (hex of the token; `HttpOnly`, `SameSite=Strict`, `Path=/ui`), and sent to the API as
//!   `Authorization: Bearer` on each of the page's API calls. Nothing else about the caller is
//!   kept: the API decides on every call.
//! - **CSRF**: each browser gets a random token in the cookie `dspy_csrf` (`HttpOnly`,
//!   `SameSite=Strict`); every form carries it in a hidden field `csrf`, and every POST of the
//!   dashboard is refused (`403`) unless the two are present and equal. Another site can neither
//!   read the cookie nor make the browser send it, so it cannot forge a form.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use rand::RngCore;

use crate::layout;
use crate::Ui;

pub const TOKEN_COOKIE: &str = "dspy_token";
pub const CSRF_COOKIE: &str = "dspy_csrf";

/// The caller of one dashboard request.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The signed-in caller's token (none when signed out, or when access control is off).
    pub token: Option<String>,
    /// This browser's CSRF token.
    pub csrf: String,
    /// The CSRF cookie is new: the response sets it.
    pub new_csrf: bool,
    /// The API authenticates callers (`serve --auth-file`).
    pub sign_in: bool,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Ctx {
    pub fn of(ui: &Ui, headers: &HeaderMap) -> Ctx {
        let token = cookie(headers, TOKEN_COOKIE)
            .and_then(|hex_token| hex::decode(hex_token).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|t| !t.is_empty());
        let existing = cookie(headers, CSRF_COOKIE)
            .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()));
        let (csrf, new_csrf) = match existing {
            Some(c) => (c.to_owned(), false),
            None => {
                let mut bytes = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                (hex::encode(bytes), true)
            }
        };
        Ctx {
            token: if ui.sign_in { token } else { None },
            csrf,
            new_csrf,
            sign_in: ui.sign_in,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether a page may be shown: access control is off, or a token is kept.
    pub fn signed_in(&self) -> bool {
        !self.sign_in || self.token.is_some()
    }

    /// Checks a form's CSRF field against this browser's cookie: `Some(the 403 page)` when it
    /// is missing or differs.
    pub fn csrf_refusal(&self, form_value: Option<&str>) -> Option<Response> {
        let ok = !self.new_csrf
            && form_value.is_some_and(|v| constant_time_eq(v.as_bytes(), self.csrf.as_bytes()));
        if ok {
            None
        } else {
            Some(layout::plain_error(
                self,
                StatusCode::FORBIDDEN,
                "forbidden",
                "The form's CSRF token is missing or does not match this browser's: reload the page and send the form again.",
            ))
        }
    }

    /// Adds the cookies this response must set (a new CSRF token).
    pub fn set_cookies(&self, response: &mut Response) {
        if self.new_csrf {
            let value = format!(
                "{CSRF_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
                self.csrf
            );
            response.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_str(&value).expect("hex cookie"),
            );
        }
    }
}

/// The `Set-Cookie` value that keeps `token` (hex-encoded: any token fits a cookie).
pub fn token_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
        hex::encode(token.as_bytes())
    ))
    .expect("hex cookie")
}

/// The `Set-Cookie` value that forgets the token.
pub fn clear_token_cookie() -> HeaderValue {
    HeaderValue::from_static("dspy_token=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
