//! Cursors tell the truth (both backends, through the router): every listing's cursor is signed
//! with HMAC-SHA256 under the service's secret and bound to its caller (see
//! `dspy_storage_core::paging`). A cursor altered by one byte, one of another search or listing,
//! one of another caller and a malformed one are each a `400` on `cursor` whose message says
//! which; after the secret is rotated (the local file, or the Secrets Manager secret of the
//! Lambda functions) a cursor signed with the previous secret still works.

use std::sync::Arc;

use dspy_storage_core::open;
use dspy_storage_core::paging::{CursorKeys, SECRET_FILE};
use dspy_storage_functions::{app, AppState};
use dspy_storage_tests::{backends, unique_name, Answer, Client, Kind};
use serde_json::{json, Value};

async fn seed(c: &Client, k: Kind) -> String {
    let mut id = String::new();
    for (sig, n) in [("S", 3), ("T", 2)] {
        for i in 0..n {
            let v = c
                .post_json(
                    "/programs",
                    &json!({"program": {"n": i}, "metadata": {"signature": sig, "performance": 0.5 + i as f64 / 10.0}}),
                )
                .await
                .expect(k, "store", 201);
            id = v["id"].as_str().unwrap().to_owned();
        }
    }
    c.post_json(
        &format!("/programs/{id}/metrics"),
        &json!({"records": [{"metrics": {"a": 1}}, {"metrics": {"a": 2}}, {"metrics": {"a": 3}}]}),
    )
    .await
    .expect(k, "metrics", 201);
    id
}

fn next(a: Answer, k: Kind, what: &str) -> String {
    a.expect(k, what, 200)["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{k:?}: {what}: no next_cursor"))
        .to_owned()
}

/// The message of a `400` on `cursor`.
fn refused(a: Answer, k: Kind, what: &str) -> String {
    let v = a.expect_error(k, what, 400, "invalid_request");
    assert_eq!(v["error"]["field"], "cursor", "{k:?}: {what}: {v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

/// One byte of `cursor` changed (at `i`, to another character of the cursor alphabet).
fn altered(cursor: &str, i: usize) -> String {
    let mut b = cursor.as_bytes().to_vec();
    b[i] = match b[i] {
        b'A' => b'B',
        b'.' => b'.',
        _ => b'A',
    };
    String::from_utf8(b).unwrap()
}

#[tokio::test]
async fn a_cursor_that_is_altered_of_another_listing_or_malformed_is_refused_truthfully() {
    for store in backends().await {
        let k = store.kind;
        let c = store.client();
        let id = seed(&c, k).await;
        let search = "/search?q=signature:S&limit=1";
        let versions = "/signatures/S/versions?limit=1";
        let history = format!("/programs/{id}/metrics?limit=1");
        let cursors = [
            (search.to_owned(), next(c.get(search).await, k, "search")),
            (
                versions.to_owned(),
                next(c.get(versions).await, k, "versions"),
            ),
            (history.clone(), next(c.get(&history).await, k, "history")),
        ];
        for (uri, cursor) in &cursors {
            // Its own listing: fine.
            c.get(&format!("{uri}&cursor={cursor}")).await.expect(
                k,
                &format!("{uri} own cursor"),
                200,
            );
            // Altered by one byte, anywhere (but the separator).
            for i in (0..cursor.len()).step_by(7).chain([cursor.len() - 1]) {
                let bad = altered(cursor, i);
                if bad == *cursor {
                    continue;
                }
                let m = refused(
                    c.get(&format!("{uri}&cursor={bad}")).await,
                    k,
                    &format!("{uri} altered at {i}"),
                );
                assert!(
                    m.contains("altered") || m.contains("malformed"),
                    "{k:?}: {uri} altered at {i}: {m}"
                );
            }
            let m = refused(c.get(&format!("{uri}&cursor=nope")).await, k, "malformed");
            assert!(m.contains("malformed"), "{k:?}: {m}");
        }
        // Another search of the same kind: "another search".
        let other = format!("/search?q=signature:T&limit=1&cursor={}", cursors[0].1);
        let m = refused(c.get(&other).await, k, "another search");
        assert!(m.contains("another search"), "{k:?}: {m}");
        let m = refused(
            c.post_json(
                "/search",
                &json!({"signature": "S", "limit": 1, "cursor": cursors[0].1}),
            )
            .await,
            k,
            "the query-language cursor in the structured form",
        );
        assert!(m.contains("another search"), "{k:?}: {m}");
        // Another listing: a versions cursor for T's versions, a history cursor in a search.
        let m = refused(
            c.get(&format!(
                "/signatures/T/versions?limit=1&cursor={}",
                cursors[1].1
            ))
            .await,
            k,
            "another signature's versions",
        );
        assert!(m.contains("another listing"), "{k:?}: {m}");
        let m = refused(
            c.get(&format!("{search}&cursor={}", cursors[2].1)).await,
            k,
            "a history cursor in a search",
        );
        assert!(m.contains("another kind of listing"), "{k:?}: {m}");
        // A cursor of another store (another secret): not signed with a secret this one knows.
        let elsewhere = dspy_storage_tests::embedded().await;
        let e = elsewhere.client();
        seed(&e, elsewhere.kind).await;
        let foreign = next(e.get(search).await, elsewhere.kind, "foreign search");
        let m = refused(
            c.get(&format!("{search}&cursor={foreign}")).await,
            k,
            "another store's cursor",
        );
        assert!(
            m.contains("not signed with a secret this server knows"),
            "{k:?}: {m}"
        );
    }
}

/// The local server: the secret is created once in the data directory (0600); rotating it keeps
/// the previous one for a cursor lifetime, so a cursor handed out before still works after a
/// restart with the new secret — and one from two rotations ago does not.
#[tokio::test]
async fn the_local_secret_rotates_without_breaking_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join(SECRET_FILE);
    let open_app = || {
        let storage = open::embedded(dir.path(), Default::default())
            .unwrap()
            .with_cursor_keys(CursorKeys::load_or_create(&secret).unwrap());
        Client {
            router: app(AppState::new(Arc::new(storage))),
        }
    };
    let k = Kind::Embedded;
    let first = open_app();
    seed(&first, k).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret file is the owner's only");
    }
    let uri = "/search?q=signature:S&limit=1";
    let cursor = next(first.get(uri).await, k, "search");
    // A restart without rotation: the same secret.
    open_app()
        .get(&format!("{uri}&cursor={cursor}"))
        .await
        .expect(k, "same secret after a restart", 200);
    CursorKeys::rotate_file(&secret).unwrap();
    let rotated = open_app();
    rotated.get(&format!("{uri}&cursor={cursor}")).await.expect(
        k,
        "previous secret after a rotation",
        200,
    );
    // A cursor of the new secret does not open on a server still running with the old one.
    let new_cursor = next(rotated.get(uri).await, k, "search after rotation");
    let m = refused(
        first.get(&format!("{uri}&cursor={new_cursor}")).await,
        k,
        "new secret, old server",
    );
    assert!(
        m.contains("not signed with a secret this server knows"),
        "{m}"
    );
    CursorKeys::rotate_file(&secret).unwrap();
    let m = refused(
        open_app().get(&format!("{uri}&cursor={cursor}")).await,
        k,
        "two rotations ago",
    );
    assert!(m.contains("altered") || m.contains("retired"), "{m}");
    open_app()
        .get(&format!("{uri}&cursor={new_cursor}"))
        .await
        .expect(k, "the previous secret after the second rotation", 200);
}

/// Lambda: the secret is a Secrets Manager secret (LocalStack's here), read once per cold
/// start; after a rotation (`PutSecretValue` moves AWSCURRENT to AWSPREVIOUS) a function that
/// starts again still opens cursors signed with the previous value.
#[tokio::test]
async fn the_secrets_manager_secret_rotates_without_breaking_cursors() {
    let stores = backends().await;
    let Some(store) = stores.into_iter().find(|s| s.kind == Kind::Aws) else {
        eprintln!("skipping: no AWS endpoint");
        return;
    };
    let k = store.kind;
    let location = store.location.clone().unwrap();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(dspy_storage_core::backend::aws::https_client())
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let created = sm
        .create_secret()
        .name(unique_name("dspy-cursor-secret"))
        .secret_string(unique_name("first-secret-value"))
        .send()
        .await
        .expect("CreateSecret");
    let arn = created.arn().unwrap().to_owned();
    let cold_start = || async {
        let keys = CursorKeys::from_secrets_manager(
            &dspy_storage_core::backend::aws::sdk_config().await,
            &arn,
        )
        .await
        .expect("GetSecretValue");
        assert_eq!(keys.source(), arn);
        let storage = open::aws(
            &dspy_storage_core::backend::aws::sdk_config().await,
            &location,
            Default::default(),
            false,
            None,
        )
        .await
        .unwrap()
        .with_cursor_keys(keys);
        Client {
            router: app(AppState::new(Arc::new(storage))),
        }
    };
    let first = cold_start().await;
    seed(&first, k).await;
    let uri = "/signatures/S/versions?limit=1";
    let cursor = next(first.get(uri).await, k, "versions");
    cold_start()
        .await
        .get(&format!("{uri}&cursor={cursor}"))
        .await
        .expect(k, "another instance, same secret", 200);
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(unique_name("second-secret-value"))
        .send()
        .await
        .expect("PutSecretValue");
    let rotated = cold_start().await;
    rotated.get(&format!("{uri}&cursor={cursor}")).await.expect(
        k,
        "AWSPREVIOUS after a rotation",
        200,
    );
    let new_cursor = next(rotated.get(uri).await, k, "versions after rotation");
    let m = refused(
        first.get(&format!("{uri}&cursor={new_cursor}")).await,
        k,
        "new secret, old instance",
    );
    assert!(
        m.contains("not signed with a secret this server knows"),
        "{m}"
    );
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(unique_name("third-secret-value"))
        .send()
        .await
        .expect("PutSecretValue");
    let m = refused(
        cold_start()
            .await
            .get(&format!("{uri}&cursor={cursor}"))
            .await,
        k,
        "two rotations ago",
    );
    assert!(m.contains("altered") || m.contains("retired"), "{m}");
    let _: Value = json!(null);
}
