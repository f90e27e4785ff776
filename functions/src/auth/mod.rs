//! Authentication and request hardening: ONE axum middleware ([`guard`]) on every route of every
//! router built by [`crate::router_for`], so a route added to the table later is covered without
//! code of its own.
//!
//! For each request, in this order:
//! 1. **authenticate** → a [`Principal`] (an id, the projects it may see, its role). Local server
//!    with `--auth-file`: a bearer token looked up by its SHA-256 in a [`TokenTable`]; Lambda: the
//!    API Gateway authorizer context (JWT claims `dspy_projects` and `dspy_role`, or a Lambda
//!    authorizer's context with the same keys, or an IAM caller mapped by [`LambdaAuth`]);
//!    [`AccessControl::Off`] makes every caller [`ANONYMOUS`] (`dspy-storage serve` without
//!    `--auth-file`). No or unknown credentials → `401 unauthenticated`.
//! 2. **role**: derived from the route, never listed per route ([`required_role`]): the cleanup and
//!    backup functions need `admin`; `GET`/`HEAD` and the query function's `POST`s (search,
//!    aggregate, time series) need `reader`; everything else needs `writer`. Too weak → `403`.
//! 3. **input limits** ([`crate::extract::check_uri`], [`crate::extract::check_json`]): URI and
//!    query sizes, percent-encoding, control characters, duplicate parameters; the body is read
//!    within the body limit (`413`), and a JSON body's depth and duplicate keys are checked (`400`).
//!
//! The principal goes into the request's extensions; handlers take it ([`Caller`]) and hand it to
//! the core operation, which decides there — where the project is read — whether the caller may
//! see it (see `dspy_storage_core::access`). Nothing here looks at which projects a request names.
//!
//! One file per concern: [`principal`] (the identity model: [`Principal`], [`Caller`],
//! [`AccessControl`]), [`tokens`] (the token file), [`lambda`] (API Gateway authorizer claims),
//! [`scope`] (project scopes from claims) and [`guard`](mod@guard) (the middleware).

pub mod guard;
pub mod lambda;
pub mod principal;
pub mod scope;
pub mod tokens;

pub use guard::{guard, required_role, GuardState, PUBLIC_ROUTES};
pub use lambda::LambdaAuth;
pub use principal::{AccessControl, Caller, Principal, Role, Scope, ANONYMOUS};
pub use scope::scope_from_claim;
pub use tokens::TokenTable;
