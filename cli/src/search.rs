//! `dspy-storage search "<query>"`: the query language of `GET /search` over the same core.

use chrono::Utc;
use clap::Args;
use dspy_storage_core::query::parse_query;
use dspy_storage_core::storage::Storage;

/// Arguments of `search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The query, e.g. `signature:ClassifyText performance>=0.85 tag:prod sentiment`.
    #[arg(default_value = "")]
    pub query: String,
    /// Sort keys: `-performance,created_at` (a leading `-` or `:desc` is descending).
    #[arg(long)]
    pub sort: Option<String>,
    /// Results per page (1-1000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Continue from the `next_cursor` of an earlier page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the cursors and print every result.
    #[arg(long)]
    pub all: bool,
    /// Print one summary line per result instead of JSON.
    #[arg(long)]
    pub brief: bool,
    #[arg(long, env = "DSPY_STORAGE_PROJECT")]
    pub project: Option<String>,
}

/// Runs a search and prints the page (`{"results", "next_cursor"}`) as JSON, or with `--all`
/// every page's results.
pub async fn run(
    storage: &Storage,
    args: SearchArgs,
    project: Option<dspy_storage_core::domain::Project>,
) -> Result<(), crate::AnyError> {
    let mut cursor = args.cursor.clone();
    let mut results = Vec::new();
    loop {
        let req = parse_query(
            &args.query,
            project.clone(),
            args.sort.as_deref(),
            Some(args.limit),
            cursor.as_deref(),
            Utc::now(),
        )?;
        let page = storage
            .search(&dspy_storage_core::access::OPERATOR, &req)
            .await?;
        results.extend(page.results);
        cursor = page.next_cursor;
        if !args.all || cursor.is_none() {
            break;
        }
    }
    if args.brief {
        for r in &results {
            let status = serde_json::to_value(r.status)?;
            crate::out::line(&format!(
                "{}  {:.3}  {}  [{}]",
                r.id,
                r.relevance_score,
                r.summary,
                status.as_str().unwrap_or_default()
            ));
        }
        if let Some(c) = &cursor {
            eprintln!("next cursor: {c}");
        }
        return Ok(());
    }
    let out = serde_json::json!({"results": results, "next_cursor": cursor});
    crate::print_json(&out)
}
