//! The route table: every route of docs/API.md, the function (Lambda) that serves it and its handler.
//! Routers and the OpenAPI document are both built from this one table.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};

use crate::AppState;

pub(crate) mod backups;
mod dspy;
pub mod maintenance;
mod programs;
mod search;
mod trends;
mod versions;

/// The Lambda functions of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    Store,
    Load,
    Query,
    Trend,
    Cleanup,
    Backup,
}

impl Function {
    pub const ALL: [Function; 6] = [
        Function::Store,
        Function::Load,
        Function::Query,
        Function::Trend,
        Function::Cleanup,
        Function::Backup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::Store => "store",
            Function::Load => "load",
            Function::Query => "query",
            Function::Trend => "trend",
            Function::Cleanup => "cleanup",
            Function::Backup => "backup",
        }
    }
}

/// One route: method, path (axum syntax, `{param}`), serving function, summary and handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub function: Function,
    pub summary: &'static str,
    pub handler: MethodRouter<AppState>,
}

fn route(
    function: Function,
    method: Method,
    path: &'static str,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        function,
        summary,
        handler,
    }
}

fn r<H, T>(
    function: Function,
    method: Method,
    path: &'static str,
    summary: &'static str,
    handler: H,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("standard method");
    route(function, method, path, summary, on(filter, handler))
}

/// Every route of the API.
pub fn all_routes() -> Vec<Route> {
    use Function::*;
    use Method as M;
    vec![
        // Programs
        r(
            Store,
            M::POST,
            "/programs",
            "Store a program",
            programs::store,
        ),
        r(
            Load,
            M::GET,
            "/programs/{id}",
            "Load a program with its metadata",
            programs::get,
        ),
        r(
            Load,
            M::GET,
            "/programs/{id}/metadata",
            "Load a program's metadata (no blob read)",
            programs::get_metadata,
        ),
        r(
            Load,
            M::GET,
            "/programs/{id}/program",
            "The program's stored bytes exactly (ETag = sha256; If-None-Match → 304)",
            programs::get_bytes,
        ),
        r(
            Store,
            M::PATCH,
            "/programs/{id}/metadata",
            "Update tags, environment, description and custom metadata",
            versions::patch_metadata,
        ),
        r(
            Store,
            M::DELETE,
            "/programs/{id}",
            "Delete a program",
            versions::delete_program,
        ),
        // Versions, aliases, rollback
        r(
            Load,
            M::GET,
            "/projects",
            "List the projects the caller may see",
            versions::list_projects,
        ),
        r(
            Load,
            M::GET,
            "/signatures",
            "List the signatures of a project, by name or by last update",
            versions::list_signatures,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/versions",
            "List a signature's versions in semantic-version order",
            programs::list_versions,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/versions/{version}",
            "Load a version (a semver or `latest`)",
            programs::get_version,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/versions/{version}/program",
            "A version's stored program bytes exactly (ETag = sha256)",
            programs::get_version_bytes,
        ),
        r(
            Store,
            M::PUT,
            "/signatures/{signature}/aliases/{alias}",
            "Point an alias at a version (compare-and-set with expected_version)",
            versions::put_alias,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/aliases/{alias}",
            "Load the program an alias points at",
            versions::get_alias,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/aliases/{alias}/program",
            "The stored program bytes an alias points at, exactly (ETag = sha256)",
            versions::get_alias_bytes,
        ),
        r(
            Store,
            M::DELETE,
            "/signatures/{signature}/aliases/{alias}",
            "Remove an alias",
            versions::delete_alias,
        ),
        r(
            Store,
            M::PUT,
            "/signatures/{signature}/aliases/{alias}/policy",
            "Set an alias's promotion policy (admin): protected, evaluation gate",
            versions::put_policy,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/aliases/{alias}/policy",
            "Read an alias's promotion policy",
            versions::get_policy,
        ),
        r(
            Store,
            M::DELETE,
            "/signatures/{signature}/aliases/{alias}/policy",
            "Remove an alias's promotion policy (admin)",
            versions::delete_policy,
        ),
        r(
            Load,
            M::GET,
            "/signatures/{signature}/aliases/{alias}/history",
            "An alias's history (moves, removals, refusals, overrides), newest first",
            versions::alias_history,
        ),
        r(
            Store,
            M::POST,
            "/signatures/{signature}/rollback",
            "Roll back: a new version identical to an earlier one",
            versions::rollback,
        ),
        // Reading DSPy programs
        r(
            Load,
            M::GET,
            "/signatures/{signature}/diff",
            "Diff two versions per predictor",
            dspy::diff,
        ),
        r(
            Load,
            M::GET,
            "/programs/{id}/prompt",
            "Render a program's prompts as Markdown",
            dspy::prompt,
        ),
        r(
            Load,
            M::GET,
            "/programs/{id}/compatibility",
            "Can two programs replace each other",
            dspy::compatibility,
        ),
        // Performance tracking
        r(
            Trend,
            M::POST,
            "/programs/{id}/metrics",
            "Record metrics (one or a batch)",
            trends::record_metrics,
        ),
        r(
            Trend,
            M::GET,
            "/programs/{id}/metrics",
            "Metric history, oldest first",
            trends::history,
        ),
        r(
            Trend,
            M::GET,
            "/programs/{id}/trends",
            "Trends of a program's metrics",
            trends::program_trends,
        ),
        r(
            Trend,
            M::GET,
            "/programs/{id}/trends.svg",
            "Chart of a program's metrics",
            trends::program_chart,
        ),
        r(
            Trend,
            M::GET,
            "/signatures/{signature}/trends",
            "Trends across a signature's versions",
            trends::signature_trends,
        ),
        r(
            Trend,
            M::GET,
            "/signatures/{signature}/trends.svg",
            "Chart across a signature's versions",
            trends::signature_chart,
        ),
        r(
            Trend,
            M::POST,
            "/optimization-runs",
            "Record an optimizer run",
            trends::create_run,
        ),
        r(
            Trend,
            M::GET,
            "/optimization-runs",
            "List optimizer runs",
            trends::list_runs,
        ),
        r(
            Trend,
            M::GET,
            "/optimization-runs/{id}",
            "Read an optimizer run",
            trends::get_run,
        ),
        r(
            Trend,
            M::GET,
            "/report",
            "Monitoring report",
            trends::report,
        ),
        // Search and querying
        r(
            Query,
            M::GET,
            "/search",
            "Search with the query language",
            search::search_get,
        ),
        r(
            Query,
            M::POST,
            "/search",
            "Structured search",
            search::search_post,
        ),
        r(
            Query,
            M::POST,
            "/aggregate",
            "Aggregate metrics grouped by a metadata field",
            search::aggregate,
        ),
        r(
            Query,
            M::POST,
            "/time-series",
            "Bucketed time series of a metric",
            search::time_series,
        ),
        r(
            Query,
            M::GET,
            "/programs/{id}/similar",
            "Programs similar to one",
            search::similar,
        ),
        // Retention and archive
        r(
            Cleanup,
            M::POST,
            "/maintenance/cleanup",
            "Run (or dry-run) the retention policy",
            maintenance::cleanup,
        ),
        r(
            Cleanup,
            M::POST,
            "/programs/{id}/archive",
            "Move a program's blob to cold storage",
            maintenance::archive,
        ),
        r(
            Cleanup,
            M::POST,
            "/programs/{id}/restore",
            "Bring an archived program back",
            maintenance::restore,
        ),
        // Backup and restore
        r(
            Backup,
            M::POST,
            "/backups",
            "Create a backup",
            backups::create,
        ),
        r(
            Backup,
            M::GET,
            "/backups",
            "List backups, newest first",
            backups::list,
        ),
        r(
            Backup,
            M::GET,
            "/backups/{name}",
            "Read a backup's manifest",
            backups::manifest,
        ),
        r(
            Backup,
            M::POST,
            "/backups/{name}/restore",
            "Restore a backup",
            backups::restore,
        ),
        // Health
        r(Load, M::GET, "/health", "Service health", programs::health),
        r(
            Load,
            M::GET,
            "/openapi.json",
            "This API's OpenAPI document",
            crate::openapi::serve,
        ),
    ]
}
