//! The dashboard's pages at scale: server-side render time of the pages `dspy-storage serve`
//! serves at `/ui/`, on the embedded backend, with (full run) 10,000 programs over 100
//! signatures, one of them with 1,000 versions. Each request goes through the router `serve`
//! runs (the dashboard over the API router, in process, no socket), so the time is the server's:
//! the API calls the page makes, their store reads and the HTML rendering.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use dspy_storage_core::config::StorageConfig;
use dspy_storage_functions::AppState;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::stats::{num, percentile, sorted};
use crate::{data, progress, BenchResult};

pub async fn section(quick: bool) -> BenchResult<String> {
    let (programs, signatures, big, iters) = if quick {
        (1_000, 20, 200, 10)
    } else {
        (10_000, 100, 1_000, 100)
    };
    let dir = tempfile::tempdir()?;
    let storage = Arc::new(dspy_storage_core::open::embedded(
        dir.path(),
        StorageConfig::default(),
    )?);
    storage.text_index_ready().await?;
    progress(format!(
        "dashboard: seeding {programs} programs over {signatures} signatures (one with {big} versions)"
    ));
    let started = Instant::now();
    let big_storage = storage.clone();
    let big_task = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(big);
        for j in 0..big {
            ids.push(data::store(&big_storage, "bench.Big", j as u64).await?);
        }
        BenchResult::Ok(ids)
    });
    let rest = data::seed(&storage, "dash", programs - big, signatures - 1, 3).await?;
    let big_ids = big_task.await??;
    let seeded = started.elapsed().as_secs_f64();

    let state = AppState::new(storage.clone());
    let api = dspy_storage_functions::app(state);
    let router = dspy_storage_ui::router(api.clone(), false).merge(api);

    let pages: Vec<(String, String)> = vec![
        (
            "signatures of the project, by name (page of 50)".to_owned(),
            "/ui/".to_owned(),
        ),
        (
            "signatures of the project, recently updated first (page of 50)".to_owned(),
            "/ui/?sort=updated".to_owned(),
        ),
        (
            "signature page: the signature with the most versions (first 100)".to_owned(),
            "/ui/signatures/bench.Big".to_owned(),
        ),
        (
            "signature page: another signature".to_owned(),
            format!("/ui/signatures/{}", rest.signatures[0]),
        ),
        (
            "program page (prompt, metric history, chart)".to_owned(),
            format!("/ui/programs/{}", big_ids[big / 2]),
        ),
        (
            format!("program page with similar programs (compared with the signature's {big})"),
            format!("/ui/programs/{}?similar=1", big_ids[big / 2]),
        ),
        (
            "diff of two versions".to_owned(),
            "/ui/diff/bench.Big?from=1.0.0&to=latest".to_owned(),
        ),
        (
            "monitoring (report)".to_owned(),
            "/ui/monitoring".to_owned(),
        ),
    ];
    let mut md = format!(
        "{programs} programs over {signatures} signatures, one with {big} versions (seeded in {} s); embedded backend; each page requested {iters} times after 3 warm-up requests, through the router `serve` runs (dashboard over the API, in process: no socket). Times in ms.\n\n| page | p50 | p95 | max | HTML bytes |\n|---|---:|---:|---:|---:|\n",
        num(seeded)
    );
    for (name, uri) in pages {
        let mut times = Vec::with_capacity(iters);
        let mut size = 0;
        for i in 0..iters + 3 {
            let t = Instant::now();
            let response = router
                .clone()
                .oneshot(http::Request::get(&uri).body(Body::empty())?)
                .await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                return Err(format!("{uri}: {status}: {}", String::from_utf8_lossy(&body)).into());
            }
            size = body.len();
            if i >= 3 {
                times.push(ms);
            }
        }
        let s = sorted(times);
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {size} |\n",
            num(percentile(&s, 50.0)),
            num(percentile(&s, 95.0)),
            num(*s.last().unwrap_or(&f64::NAN))
        ));
        progress(format!(
            "dashboard: {name}: p50 {} ms",
            num(percentile(&s, 50.0))
        ));
    }
    Ok(md)
}
