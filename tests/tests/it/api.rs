//! HTTP-level tests of the API through the full router (`dspy_storage_functions::app`), run against
//! every backend of `backends()`: the embedded one always, the AWS one when an endpoint is set.
//! Every failure names the backend it happened on.

use std::collections::{BTreeMap, BTreeSet};

use dspy_storage_core::blob::codec::sha256_hex;
use dspy_storage_tests::{backends, shared_program, Client, Kind, SHARED_PROGRAMS};
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// A store request body with the program's JSON text spliced in verbatim (key order, spacing and
/// number spelling untouched).
fn store_body(program: &str, metadata: &Value) -> String {
    format!(r#"{{"program": {program}, "metadata": {metadata}}}"#)
}

/// Compact re-serialization with keys in their original order (the workspace enables
/// serde_json's `preserve_order`).
fn compact(text: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<Value>(text).expect("valid JSON")).unwrap()
}

/// The versions of a signature in a project, `None` when the signature has none (404).
async fn versions(
    k: Kind,
    c: &Client,
    signature: &str,
    project: Option<&str>,
) -> Option<Vec<String>> {
    let uri = match project {
        Some(p) => format!("/signatures/{signature}/versions?project={p}"),
        None => format!("/signatures/{signature}/versions"),
    };
    let a = c.get(&uri).await;
    if a.status == StatusCode::NOT_FOUND {
        a.expect_error(k, &uri, 404, "not_found");
        return None;
    }
    let v = a.expect(k, &uri, 200);
    Some(
        v["versions"]
            .as_array()
            .unwrap_or_else(|| panic!("{k:?}: {uri}: no versions array in {v}"))
            .iter()
            .map(|e| e["version"].as_str().expect("version string").to_owned())
            .collect(),
    )
}

async fn store(k: Kind, c: &Client, program: &str, metadata: Value) -> Value {
    let a = c
        .post_raw("/programs", store_body(program, &metadata))
        .await;
    a.expect(k, &format!("store {metadata}"), 201)
}

const SMALL_PROGRAM: &str = r#"{"predict": {"demos": [], "signature": {"instructions": "Answer.", "fields": [{"prefix": "Question:"}, {"prefix": "Answer:"}]}}, "metadata": {"dependency_versions": {"python": "3.11", "dspy": "2.6.0"}}}"#;

#[tokio::test]
async fn stores_and_loads_shared_programs_byte_for_byte() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        for (i, name) in SHARED_PROGRAMS.iter().enumerate() {
            let text = shared_program(name);
            let original = text.trim();
            let signature = format!("Shared{i}");
            let metadata = json!({
                "signature": signature,
                "version": "1.0.0",
                "optimization_method": "miprov2",
                "performance": {"accuracy": 0.81, "score": 0.9},
                "examples_count": 120,
                "tags": ["prod-candidate", "qa"],
                "description": format!("the shared program {name}"),
                "zz_custom": {"b": 2, "a": [1, "x", null]},
                "aa_custom": 1.5e3
            });
            let body = store_body(&text, &metadata);
            let a = c.post_raw("/programs", body).await;
            let stored = a.expect(k, &format!("store {name}"), 201);
            let id = stored["id"].as_str().expect("id").to_owned();
            assert_eq!(id.len(), 36, "{k:?}: {name}: id {id} is a UUID");
            assert_eq!(stored["signature"], signature, "{k:?}: {name}");
            assert_eq!(stored["version"], "1.0.0", "{k:?}: {name}");
            let created_at = stored["created_at"].as_str().expect("created_at");
            assert!(
                created_at.ends_with('Z') && created_at.contains('T'),
                "{k:?}: {name}: created_at {created_at} is RFC 3339 UTC"
            );
            assert_eq!(
                stored["size"],
                original.len() as u64,
                "{k:?}: {name}: size is the program's JSON length"
            );
            assert_eq!(
                stored["sha256"],
                sha256_hex(original.as_bytes()),
                "{k:?}: {name}: sha256 of the program's JSON"
            );

            // Load by id: the program exactly as sent.
            let uri = format!("/programs/{id}");
            let a = c.get(&uri).await;
            let full = a.expect(k, &uri, 200);
            let raw = a.raw_program();
            assert_eq!(
                raw, original,
                "{k:?}: {name}: program text is byte-identical"
            );
            assert_eq!(
                compact(&raw),
                compact(&text),
                "{k:?}: {name}: compact re-serialization with original key order"
            );
            assert_eq!(full["id"], id.as_str(), "{k:?}: {name}");
            assert_eq!(full["signature"], signature, "{k:?}: {name}");
            assert_eq!(full["version"], "1.0.0", "{k:?}: {name}");
            assert_eq!(full["project"], "default", "{k:?}: {name}");
            assert_eq!(full["status"], "active", "{k:?}: {name}");
            assert_eq!(full["created_at"], created_at, "{k:?}: {name}");
            assert!(full["updated_at"].is_string(), "{k:?}: {name}: updated_at");
            assert_eq!(full["size"], stored["size"], "{k:?}: {name}");
            assert_eq!(full["sha256"], stored["sha256"], "{k:?}: {name}");
            let meta = &full["metadata"];
            assert_eq!(meta["signature"], signature, "{k:?}: {name}");
            assert_eq!(meta["version"], "1.0.0", "{k:?}: {name}");
            assert_eq!(meta["project"], "default", "{k:?}: {name}");
            assert_eq!(meta["optimization_method"], "miprov2", "{k:?}: {name}");
            assert_eq!(
                meta["tags"],
                json!(["prod-candidate", "qa"]),
                "{k:?}: {name}"
            );
            assert_eq!(meta["zz_custom"], metadata["zz_custom"], "{k:?}: {name}");
            assert_eq!(meta["aa_custom"], json!(1500.0), "{k:?}: {name}");
            assert_eq!(meta["examples_count"], 120, "{k:?}: {name}");
            // Custom keys keep their order: zz_custom was sent before aa_custom.
            let keys: Vec<&String> = meta.as_object().expect("object").keys().collect();
            let zz = keys.iter().position(|k| *k == "zz_custom").unwrap();
            let aa = keys.iter().position(|k| *k == "aa_custom").unwrap();
            assert!(zz < aa, "{k:?}: {name}: metadata key order kept: {keys:?}");

            // Metadata only: the same answer without the program.
            let uri = format!("/programs/{id}/metadata");
            let a = c.get(&uri).await;
            let only_meta = a.expect(k, &uri, 200);
            assert!(
                only_meta.get("program").is_none(),
                "{k:?}: {name}: /metadata has no program: {only_meta}"
            );
            let mut without = full.clone();
            without.as_object_mut().unwrap().remove("program");
            assert_eq!(
                only_meta, without,
                "{k:?}: {name}: /metadata = load minus program"
            );

            // Versions: list, latest, exact.
            let uri = format!("/signatures/{signature}/versions");
            let a = c.get(&uri).await;
            let list = a.expect(k, &uri, 200);
            let entries = list["versions"].as_array().expect("versions");
            assert_eq!(entries.len(), 1, "{k:?}: {name}: {list}");
            assert_eq!(entries[0]["version"], "1.0.0", "{k:?}: {name}");
            assert_eq!(entries[0]["id"], id.as_str(), "{k:?}: {name}");
            assert_eq!(entries[0]["created_at"], created_at, "{k:?}: {name}");
            assert_eq!(entries[0]["performance"], 0.9, "{k:?}: {name}: score wins");
            assert_eq!(entries[0]["size"], stored["size"], "{k:?}: {name}");
            assert_eq!(
                entries[0]["aliases"],
                json!([]),
                "{k:?}: {name}: no aliases yet"
            );

            for sel in ["latest", "1.0.0"] {
                let uri = format!("/signatures/{signature}/versions/{sel}");
                let a = c.get(&uri).await;
                let v = a.expect(k, &uri, 200);
                assert_eq!(v["id"], id.as_str(), "{k:?}: {uri}");
                assert_eq!(a.raw_program(), original, "{k:?}: {uri}: program text");
                assert_eq!(v, full, "{k:?}: {uri}: same answer as by id");
            }
            let uri = format!("/signatures/{signature}/versions/1.0.1");
            c.get(&uri).await.expect_error(k, &uri, 404, "not_found");
        }
    }
}

#[tokio::test]
async fn versions_are_ordered_semantically_and_auto_increment() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        // First store without a version: 1.0.0.
        let first = store(k, &c, SMALL_PROGRAM, json!({"signature": "Ordered"})).await;
        assert_eq!(first["version"], "1.0.0", "{k:?}: first version");
        let mut ids = BTreeMap::new();
        ids.insert("1.0.0".to_owned(), first["id"].as_str().unwrap().to_owned());
        for v in ["1.10.0", "1.2.0", "1.9.1", "0.9.0"] {
            let s = store(
                k,
                &c,
                SMALL_PROGRAM,
                json!({"signature": "Ordered", "version": v, "performance": 0.5}),
            )
            .await;
            assert_eq!(s["version"], v, "{k:?}");
            ids.insert(v.to_owned(), s["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            versions(k, &c, "Ordered", None).await,
            Some(
                vec!["0.9.0", "1.0.0", "1.2.0", "1.9.1", "1.10.0"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            ),
            "{k:?}: semantic-version order"
        );
        let a = c.get("/signatures/Ordered/versions/latest").await;
        let latest = a.expect(k, "latest", 200);
        assert_eq!(latest["version"], "1.10.0", "{k:?}: latest is the highest");
        assert_eq!(latest["id"], ids["1.10.0"].as_str(), "{k:?}");
        // Auto version: the next patch after the latest.
        let next = store(k, &c, SMALL_PROGRAM, json!({"signature": "Ordered"})).await;
        assert_eq!(next["version"], "1.10.1", "{k:?}: next patch after latest");
        let a = c.get("/signatures/Ordered/versions/latest").await;
        assert_eq!(a.expect(k, "latest", 200)["id"], next["id"], "{k:?}");
        let a = c.get("/signatures/Ordered/versions/1.2.0").await;
        assert_eq!(
            a.expect(k, "1.2.0", 200)["id"],
            ids["1.2.0"].as_str(),
            "{k:?}"
        );

        // Pagination: pages of 2 return every version once, in order.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let uri = match &cursor {
                None => "/signatures/Ordered/versions?limit=2".to_owned(),
                Some(cur) => format!("/signatures/Ordered/versions?limit=2&cursor={cur}"),
            };
            let a = c.get(&uri).await;
            let page = a.expect(k, &uri, 200);
            let items = page["versions"].as_array().unwrap();
            assert!(items.len() <= 2, "{k:?}: page over the limit: {page}");
            seen.extend(
                items
                    .iter()
                    .map(|e| e["version"].as_str().unwrap().to_owned()),
            );
            pages += 1;
            assert!(pages < 10, "{k:?}: pagination does not end");
            match page["next_cursor"].as_str() {
                Some(cur) => cursor = Some(cur.to_owned()),
                None => break,
            }
        }
        assert_eq!(
            seen,
            vec!["0.9.0", "1.0.0", "1.2.0", "1.9.1", "1.10.0", "1.10.1"],
            "{k:?}: every version once, in order"
        );
    }
}

#[tokio::test]
async fn projects_separate_version_histories() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        let alpha = store(
            k,
            &c,
            SMALL_PROGRAM,
            json!({"signature": "Twin", "project": "alpha", "version": "1.0.0"}),
        )
        .await;
        // The same signature and version in another project is no conflict.
        let beta = store(
            k,
            &c,
            r#"{"other": true}"#,
            json!({"signature": "Twin", "project": "beta", "version": "1.0.0"}),
        )
        .await;
        assert_ne!(alpha["id"], beta["id"], "{k:?}");
        let alpha2 = store(
            k,
            &c,
            SMALL_PROGRAM,
            json!({"signature": "Twin", "project": "alpha"}),
        )
        .await;
        assert_eq!(alpha2["version"], "1.0.1", "{k:?}: alpha's own history");

        assert_eq!(
            versions(k, &c, "Twin", Some("alpha")).await,
            Some(vec!["1.0.0".to_owned(), "1.0.1".to_owned()]),
            "{k:?}"
        );
        assert_eq!(
            versions(k, &c, "Twin", Some("beta")).await,
            Some(vec!["1.0.0".to_owned()]),
            "{k:?}"
        );
        assert_eq!(
            versions(k, &c, "Twin", None).await,
            None,
            "{k:?}: default project has none"
        );

        let a = c.get("/signatures/Twin/versions/latest?project=beta").await;
        let b = a.expect(k, "beta latest", 200);
        assert_eq!(b["id"], beta["id"], "{k:?}");
        assert_eq!(b["project"], "beta", "{k:?}");
        assert_eq!(a.raw_program(), r#"{"other": true}"#, "{k:?}");
        let a = c
            .get("/signatures/Twin/versions/latest?project=alpha")
            .await;
        assert_eq!(
            a.expect(k, "alpha latest", 200)["id"],
            alpha2["id"],
            "{k:?}"
        );
        let a = c.get("/signatures/Twin/versions/1.0.0?project=alpha").await;
        assert_eq!(a.expect(k, "alpha 1.0.0", 200)["id"], alpha["id"], "{k:?}");
        let a = c.get("/signatures/Twin/versions/latest").await;
        a.expect_error(k, "default project latest", 404, "not_found");
        let a = c
            .get(&format!("/programs/{}", beta["id"].as_str().unwrap()))
            .await;
        assert_eq!(a.expect(k, "beta by id", 200)["project"], "beta", "{k:?}");
        let a = c.get("/signatures/Twin/versions?project=not%20valid").await;
        a.expect_error(k, "invalid project", 400, "invalid_request");
    }
}

#[tokio::test]
async fn bad_store_requests_are_refused_and_store_nothing() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        let base = store(
            k,
            &c,
            SMALL_PROGRAM,
            json!({"signature": "Base", "version": "1.0.0"}),
        )
        .await;
        let one = Some(vec!["1.0.0".to_owned()]);

        // A taken version.
        let a = c
            .post_raw(
                "/programs",
                store_body(
                    r#"{"x": 1}"#,
                    &json!({"signature": "Base", "version": "1.0.0"}),
                ),
            )
            .await;
        a.expect_error(k, "taken version", 409, "conflict");
        assert_eq!(versions(k, &c, "Base", None).await, one, "{k:?}: after 409");
        let a = c.get("/signatures/Base/versions/1.0.0").await;
        assert_eq!(a.expect(k, "Base 1.0.0", 200)["id"], base["id"], "{k:?}");
        assert_eq!(
            a.raw_program(),
            SMALL_PROGRAM,
            "{k:?}: first program untouched"
        );

        // Bodies refused before any storage: (what, body, field).
        let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
            (
                "malformed JSON",
                r#"{"program": {"a": 1}, "metadata": {"signature": "Bad""#.into(),
                None,
                "Bad",
            ),
            ("not JSON at all", "signature=Bad".into(), None, "Bad"),
            ("empty body", String::new(), None, "Bad"),
            ("body is an array", "[1, 2]".into(), None, "Bad"),
            (
                "missing metadata.signature",
                store_body("{}", &json!({"version": "1.0.0"})),
                Some("metadata.signature"),
                "Bad",
            ),
            (
                "metadata.signature not a string",
                store_body("{}", &json!({"signature": 7})),
                Some("metadata.signature"),
                "Bad",
            ),
            (
                "missing metadata",
                r#"{"program": {"a": 1}}"#.into(),
                Some("metadata"),
                "Bad",
            ),
            (
                "bad semver",
                store_body("{}", &json!({"signature": "BadSemver", "version": "1.0"})),
                Some("metadata.version"),
                "BadSemver",
            ),
            (
                "bad semver text",
                store_body(
                    "{}",
                    &json!({"signature": "BadSemver", "version": "latest"}),
                ),
                Some("metadata.version"),
                "BadSemver",
            ),
            (
                "signature with a slash",
                store_body("{}", &json!({"signature": "Bad/Slash"})),
                Some("metadata.signature"),
                "Bad",
            ),
            (
                "signature too long",
                store_body("{}", &json!({"signature": "S".repeat(129)})),
                Some("metadata.signature"),
                "Bad",
            ),
            (
                "program missing",
                r#"{"metadata": {"signature": "NoProgram"}}"#.into(),
                Some("program"),
                "NoProgram",
            ),
            (
                "performance a string",
                store_body(
                    "{}",
                    &json!({"signature": "BadPerf", "performance": "high"}),
                ),
                Some("metadata.performance"),
                "BadPerf",
            ),
            (
                "performance object with a string",
                store_body(
                    "{}",
                    &json!({"signature": "BadPerf", "performance": {"accuracy": "0.9"}}),
                ),
                None,
                "BadPerf",
            ),
            (
                "created_at in the future",
                store_body(
                    "{}",
                    &json!({"signature": "Future", "created_at": "2999-01-01T00:00:00Z"}),
                ),
                Some("metadata.created_at"),
                "Future",
            ),
            (
                "created_at not a time",
                store_body(
                    "{}",
                    &json!({"signature": "Future", "created_at": "yesterday"}),
                ),
                Some("metadata.created_at"),
                "Future",
            ),
            (
                "tags not strings",
                store_body("{}", &json!({"signature": "BadTags", "tags": [1, 2]})),
                Some("metadata.tags"),
                "BadTags",
            ),
            (
                "unknown top-level key",
                r#"{"program": {}, "metadata": {"signature": "Extra"}, "extra": 1}"#.into(),
                None,
                "Extra",
            ),
            (
                "bad semver on an existing signature",
                store_body("{}", &json!({"signature": "Base", "version": "1.0"})),
                Some("metadata.version"),
                "Base",
            ),
        ];
        for (what, body, field, signature) in cases {
            let a = c.post_raw("/programs", body).await;
            let v = a.expect_error(k, what, 400, "invalid_request");
            if let Some(field) = field {
                assert_eq!(v["error"]["field"], field, "{k:?}: {what}: field in {v}");
            }
            if signature == "Base" {
                assert_eq!(
                    versions(k, &c, "Base", None).await,
                    one,
                    "{k:?}: after {what}"
                );
            } else {
                assert_eq!(
                    versions(k, &c, signature, None).await,
                    None,
                    "{k:?}: {what}: nothing stored under {signature}"
                );
            }
        }

        // Over the 5 MiB limit: a 6 MiB program, with and without a Content-Length header.
        let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(6 * 1024 * 1024));
        let body = store_body(&big, &json!({"signature": "Huge"}));
        let a = c.post_raw("/programs", body.clone()).await;
        a.expect_error(k, "6 MiB body", 413, "payload_too_large");
        let len = body.len().to_string();
        let a = c
            .request(
                Method::POST,
                "/programs",
                &[
                    ("content-type", "application/json"),
                    ("content-length", &len),
                ],
                body,
            )
            .await;
        a.expect_error(
            k,
            "6 MiB body with content-length",
            413,
            "payload_too_large",
        );
        assert_eq!(
            versions(k, &c, "Huge", None).await,
            None,
            "{k:?}: nothing stored after 413"
        );

        // None of the refusals consumed a version: the next automatic one is 1.0.1.
        let next = store(k, &c, SMALL_PROGRAM, json!({"signature": "Base"})).await;
        assert_eq!(next["version"], "1.0.1", "{k:?}");
        assert_eq!(
            versions(k, &c, "Base", None).await,
            Some(vec!["1.0.0".to_owned(), "1.0.1".to_owned()]),
            "{k:?}"
        );
    }
}

#[tokio::test]
async fn bad_reads_answer_in_the_error_shape() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        let s = store(k, &c, SMALL_PROGRAM, json!({"signature": "Reads"})).await;
        let other = store(k, &c, SMALL_PROGRAM, json!({"signature": "Reads"})).await;
        assert_eq!(other["version"], "1.0.1", "{k:?}");

        // Unknown and malformed ids.
        let unknown = "0190a5c2-7b1e-7c3d-8e4f-123456789abc";
        for uri in [
            format!("/programs/{unknown}"),
            format!("/programs/{unknown}/metadata"),
            "/programs/not-an-id".to_owned(),
            "/programs/not-an-id/metadata".to_owned(),
            "/programs/%20".to_owned(),
        ] {
            c.get(&uri).await.expect_error(k, &uri, 404, "not_found");
        }
        // Unknown signature and version.
        for uri in [
            "/signatures/Unknown/versions",
            "/signatures/Unknown/versions/latest",
            "/signatures/Unknown/versions/1.0.0",
            "/signatures/Reads/versions/9.9.9",
        ] {
            c.get(uri).await.expect_error(k, uri, 404, "not_found");
        }
        // Invalid signature or version in the path.
        for uri in [
            "/signatures/Bad%2FSlash/versions",
            "/signatures/Bad%2FSlash/versions/latest",
            "/signatures/Reads/versions/1.0",
            "/signatures/Reads/versions/newest",
        ] {
            c.get(uri)
                .await
                .expect_error(k, uri, 400, "invalid_request");
        }
        // Bad limits and cursors.
        for (uri, field) in [
            ("/signatures/Reads/versions?limit=abc", "limit"),
            ("/signatures/Reads/versions?limit=-1", "limit"),
            ("/signatures/Reads/versions?limit=0", "limit"),
            ("/signatures/Reads/versions?limit=100000", "limit"),
            ("/signatures/Reads/versions?cursor=AAAA", "cursor"),
            (
                "/signatures/Reads/versions?cursor=not%20base64%21",
                "cursor",
            ),
        ] {
            let v = c
                .get(uri)
                .await
                .expect_error(k, uri, 400, "invalid_request");
            assert_eq!(v["error"]["field"], field, "{k:?}: {uri}: {v}");
        }
        let a = c.get("/signatures/Reads/versions?limit=1&limit=2").await;
        a.expect_error(k, "limit twice", 400, "invalid_request");
        // A real cursor of another listing is refused too.
        let a = c.get("/signatures/Reads/versions?limit=1").await;
        let page = a.expect(k, "limit=1", 200);
        let cursor = page["next_cursor"]
            .as_str()
            .expect("a next cursor")
            .to_owned();
        store(k, &c, SMALL_PROGRAM, json!({"signature": "Elsewhere"})).await;
        let uri = format!("/signatures/Elsewhere/versions?cursor={cursor}");
        let v =
            c.get(&uri)
                .await
                .expect_error(k, "cursor of another listing", 400, "invalid_request");
        assert_eq!(v["error"]["field"], "cursor", "{k:?}");
        let uri = format!("/signatures/Reads/versions?project=other&cursor={cursor}");
        c.get(&uri)
            .await
            .expect_error(k, "cursor of another project", 400, "invalid_request");
        // The cursor works on its own listing.
        let uri = format!("/signatures/Reads/versions?limit=1&cursor={cursor}");
        let page = c.get(&uri).await.expect(k, &uri, 200);
        assert_eq!(page["versions"][0]["version"], "1.0.1", "{k:?}");
        assert_eq!(page["versions"].as_array().unwrap().len(), 1, "{k:?}");
        let a = c
            .get(&format!("/programs/{}", s["id"].as_str().unwrap()))
            .await;
        a.expect(k, "still readable", 200);
    }
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_pending_routes() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        for uri in ["/nope", "/programs/x/y/z", "/signatures/A", "/"] {
            let v = c.get(uri).await.expect_error(k, uri, 404, "not_found");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(uri),
                "{k:?}: {v}"
            );
        }
        for (method, uri) in [
            (Method::PUT, "/programs"),
            (Method::GET, "/programs"),
            (Method::DELETE, "/health"),
            (Method::POST, "/signatures/A/versions"),
            (
                Method::PUT,
                "/programs/0190a5c2-7b1e-7c3d-8e4f-123456789abc",
            ),
        ] {
            let a = c.request(method.clone(), uri, &[], "{}").await;
            assert_eq!(a.status.as_u16(), 405, "{k:?}: {method} {uri}: {a:?}");
            let allow = a
                .headers
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            assert!(
                allow
                    .as_deref()
                    .is_some_and(|v| !v.is_empty() && !v.contains(method.as_str())),
                "{k:?}: {method} {uri}: Allow header lists the other methods: {allow:?}"
            );
            if uri == "/programs" {
                assert_eq!(allow.as_deref(), Some("POST"), "{k:?}: {method} {uri}");
            }
            let v = a.json();
            assert!(
                v["error"]["code"].as_str().is_some_and(|s| !s.is_empty())
                    && v["error"]["message"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                "{k:?}: {method} {uri}: error shape in {v}"
            );
        }
        // Every feature has landed: no route answers 501 any more.
        let a = c.post_json("/search", &json!({"signature": "A"})).await;
        a.expect_status(k, "POST /search", 200);
        c.get("/report").await.expect_status(k, "GET /report", 200);
        let v = c.get("/backups").await.expect(k, "GET /backups", 200);
        assert!(v["backups"].is_array(), "{k:?}: {v}");
    }
}

/// Every route of the table answers either success or a 4xx in the error shape, never a 5xx. The
/// requests name an unknown program and signature, so nothing existing is touched.
#[tokio::test]
async fn every_route_answers_success_or_the_error_shape() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        let s = store(k, &c, SMALL_PROGRAM, json!({"signature": "Pending"})).await;
        let id = s["id"].as_str().unwrap().to_owned();
        for route in dspy_storage_functions::all_routes() {
            let uri = route
                .path
                .replace("{id}", "0190a5c2-7b1e-7c3d-8e4f-123456789abc")
                .replace("{signature}", "NoSuchSignature")
                .replace("{version}", "latest")
                .replace("{alias}", "production")
                .replace("{name}", "no-such-backup");
            let what = format!("{} {uri}", route.method);
            let a = c
                .request(
                    route.method.clone(),
                    &uri,
                    &[("content-type", "application/json")],
                    r#"{"dry_run": true}"#,
                )
                .await;
            let status = a.status.as_u16();
            assert!(
                status < 500,
                "{k:?}: {what}: every route is implemented; got {status}: {}",
                String::from_utf8_lossy(&a.body)
            );
            if status >= 300 {
                let v = a.json();
                assert!(
                    v["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                        && v["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty()),
                    "{k:?}: {what}: {status} in the error shape: {v}"
                );
            }
        }
        // Nothing changed: the one program is still there and readable.
        assert_eq!(
            versions(k, &c, "Pending", None).await,
            Some(vec!["1.0.0".to_owned()]),
            "{k:?}"
        );
        let a = c.get(&format!("/programs/{id}")).await;
        assert_eq!(a.raw_program(), SMALL_PROGRAM, "{k:?}");
    }
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer() {
    for store_ in backends().await {
        let k = store_.kind;
        let c = store_.client();
        let body = store_body(SMALL_PROGRAM, &json!({"signature": "Idem", "tags": ["a"]}));
        let post = |key: &'static str, body: String| {
            let c = c.clone();
            async move {
                c.request(
                    Method::POST,
                    "/programs",
                    &[
                        ("content-type", "application/json"),
                        ("idempotency-key", key),
                    ],
                    body,
                )
                .await
            }
        };
        let first = post("key-1", body.clone()).await;
        let first_v = first.expect(k, "first", 201);
        assert!(
            first.headers.get("idempotent-replayed").is_none(),
            "{k:?}: the first answer is no replay"
        );
        for attempt in 0..2 {
            let again = post("key-1", body.clone()).await;
            let again_v = again.expect(k, "retry", 201);
            assert_eq!(
                again_v, first_v,
                "{k:?}: retry {attempt} answers as the first"
            );
            assert_eq!(
                again
                    .headers
                    .get("idempotent-replayed")
                    .map(|v| v.to_str().unwrap()),
                Some("true"),
                "{k:?}: replay header"
            );
        }
        assert_eq!(
            versions(k, &c, "Idem", None).await,
            Some(vec!["1.0.0".to_owned()]),
            "{k:?}: a retry stores nothing new"
        );

        // Same key, another body: 409, nothing stored.
        let other = store_body(r#"{"different": 1}"#, &json!({"signature": "Idem"}));
        let a = post("key-1", other.clone()).await;
        a.expect_error(k, "same key, other body", 409, "conflict");
        let a = post(
            "key-1",
            store_body(SMALL_PROGRAM, &json!({"signature": "IdemOther"})),
        )
        .await;
        a.expect_error(k, "same key, other signature", 409, "conflict");
        assert_eq!(versions(k, &c, "IdemOther", None).await, None, "{k:?}");
        assert_eq!(
            versions(k, &c, "Idem", None).await,
            Some(vec!["1.0.0".to_owned()]),
            "{k:?}: nothing stored by the refused request"
        );

        // Another key is another request: it stores a new version.
        let a = post("key-2", other).await;
        let second = a.expect(k, "new key", 201);
        assert_eq!(second["version"], "1.0.1", "{k:?}");
        assert_ne!(second["id"], first_v["id"], "{k:?}");
        assert!(a.headers.get("idempotent-replayed").is_none(), "{k:?}");
        // The first key still replays its own answer.
        let a = post("key-1", body.clone()).await;
        assert_eq!(a.expect(k, "replay after", 201), first_v, "{k:?}");
        // A key that is not printable ASCII is refused.
        let a = post("key with spaces", body.clone()).await;
        a.expect_error(k, "bad key", 400, "invalid_request");
        assert_eq!(
            versions(k, &c, "Idem", None).await,
            Some(vec!["1.0.0".to_owned(), "1.0.1".to_owned()]),
            "{k:?}"
        );
        // The stored program is the first request's.
        let a = c
            .get(&format!("/programs/{}", first_v["id"].as_str().unwrap()))
            .await;
        assert_eq!(a.raw_program(), SMALL_PROGRAM, "{k:?}");
    }
}

#[tokio::test]
async fn health_answers_ok() {
    for store_ in backends().await {
        let k = store_.kind;
        let a = store_.client().get("/health").await;
        let v = a.expect(k, "/health", 200);
        assert_eq!(v["status"], "ok", "{k:?}: {v}");
        assert!(
            v["backend"].as_str().is_some_and(|b| !b.is_empty()),
            "{k:?}: {v}"
        );
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{k:?}: {v}");
    }
}

#[tokio::test]
async fn openapi_lists_exactly_the_route_table() {
    let expected: BTreeSet<(String, String)> = dspy_storage_functions::all_routes()
        .iter()
        .map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned()))
        .collect();
    assert!(
        expected.len() > 30,
        "the route table has every route of docs/API.md"
    );
    for store_ in backends().await {
        let k = store_.kind;
        let a = store_.client().get("/openapi.json").await;
        let doc = a.expect(k, "/openapi.json", 200);
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{k:?}: openapi version"
        );
        let mut listed = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert!(
                    ["get", "put", "post", "delete", "patch", "head", "options"]
                        .contains(&method.as_str()),
                    "{k:?}: {path} has a non-operation key {method}"
                );
                assert!(op["summary"].is_string(), "{k:?}: {method} {path} summary");
                assert!(
                    listed.insert((method.clone(), path.clone())),
                    "{k:?}: duplicate {method} {path}"
                );
            }
        }
        assert_eq!(
            listed, expected,
            "{k:?}: the document lists every route and no other"
        );
        assert!(doc["components"]["schemas"]["Error"].is_object(), "{k:?}");
        // Every reference resolves; the policy routes name their shapes; the error codes list
        // the one of a refused promotion.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in &all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a local schema");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{k:?}: {r} resolves"
            );
        }
        let policy = &doc["paths"]["/signatures/{signature}/aliases/{alias}/policy"]["put"];
        assert_eq!(
            policy["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/AliasPolicy",
            "{k:?}"
        );
        let required = &doc["components"]["schemas"]["AliasPolicy"]["properties"]["require"];
        assert_eq!(required["properties"]["min_records"]["minimum"], 0, "{k:?}");
        let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"]
            .as_array()
            .expect("codes");
        assert!(codes.contains(&json!("policy_violation")), "{k:?}");
    }
}

/// A program whose text no re-serialization reproduces: odd whitespace, escapes (`\u00e9`, `\/`,
/// `\n`, a surrogate pair) and number forms (`1.0`, `1e3`, `-0`, `1E-2`, `0.10`).
const ODD_PROGRAM: &str = "{ \"predict\" :\t{\"demos\":[ ],\n  \"signature\": {\"instructions\": \"caf\\u00e9 \\/ \\n \\ud83d\\ude00\"}},\r\n \"n\": [1.0, 1e3, -0, 1E-2, 0.10, 12345678901234567890],\"z\":{\"b\":1 , \"a\":2}   }";

/// `GET …/program` (by id, by version or `latest`, by alias, with `?project=`): exactly the
/// stored bytes, their SHA-256 in `ETag` and `X-Dspy-Sha256`, the record's facts in headers,
/// `304` for a matching `If-None-Match`, and the sibling routes' errors (404, 400, 409 archived,
/// 422 for a corrupted blob), on both backends through the router.
#[tokio::test]
async fn exact_bytes_routes_answer_the_stored_program_and_its_hash() {
    // The in-process program cache off: every load reads and verifies the stored bytes.
    let config = dspy_storage_core::config::StorageConfig {
        program_cache_bytes: 0,
        ..Default::default()
    };
    for store_ in dspy_storage_tests::backends_with(config).await {
        let k = store_.kind;
        let c = store_.client();
        assert!(
            serde_json::from_str::<Value>(ODD_PROGRAM).is_ok(),
            "the odd program is JSON"
        );
        let reserialized =
            serde_json::to_string(&serde_json::from_str::<Value>(ODD_PROGRAM).unwrap()).unwrap();
        assert_ne!(reserialized, ODD_PROGRAM, "re-serializing changes the text");
        let first = store(
            k,
            &c,
            SMALL_PROGRAM,
            json!({"signature": "Exact", "version": "1.0.0"}),
        )
        .await;
        let stored = store(
            k,
            &c,
            ODD_PROGRAM,
            json!({"signature": "Exact", "version": "1.1.0", "project": "default"}),
        )
        .await;
        let id = stored["id"].as_str().unwrap().to_owned();
        let sha = sha256_hex(ODD_PROGRAM.as_bytes());
        assert_eq!(
            stored["sha256"],
            sha.as_str(),
            "{k:?}: the record's hash is of the text"
        );
        let other = store(
            k,
            &c,
            r#"{"other":  true}"#,
            json!({"signature": "Exact", "project": "p2"}),
        )
        .await;
        c.request(
            Method::PUT,
            "/signatures/Exact/aliases/production",
            &[("content-type", "application/json")],
            r#"{"version": "1.1.0"}"#,
        )
        .await
        .expect(k, "set alias", 200);
        let meta = c
            .get(&format!("/programs/{id}/metadata"))
            .await
            .expect(k, "metadata", 200);

        let header = |a: &dspy_storage_tests::Answer, name: &str| {
            a.headers
                .get(name)
                .unwrap_or_else(|| panic!("{k:?}: no {name} header: {:?}", a.headers))
                .to_str()
                .unwrap()
                .to_owned()
        };
        for uri in [
            format!("/programs/{id}/program"),
            "/signatures/Exact/versions/1.1.0/program".to_owned(),
            "/signatures/Exact/versions/latest/program".to_owned(),
            "/signatures/Exact/versions/latest/program?project=default".to_owned(),
            "/signatures/Exact/aliases/production/program".to_owned(),
        ] {
            let a = c.get(&uri).await;
            a.expect_status(k, &uri, 200);
            assert_eq!(
                &a.body[..],
                ODD_PROGRAM.as_bytes(),
                "{k:?}: {uri}: the stored bytes"
            );
            assert_eq!(
                sha256_hex(&a.body),
                sha,
                "{k:?}: {uri}: the bytes hash to the record's sha256"
            );
            assert_eq!(
                header(&a, "content-type"),
                "application/json",
                "{k:?}: {uri}"
            );
            assert_eq!(header(&a, "etag"), format!("\"{sha}\""), "{k:?}: {uri}");
            assert_eq!(header(&a, "x-dspy-sha256"), sha, "{k:?}: {uri}");
            assert_eq!(header(&a, "x-dspy-program-id"), id, "{k:?}: {uri}");
            assert_eq!(header(&a, "x-dspy-signature"), "Exact", "{k:?}: {uri}");
            assert_eq!(header(&a, "x-dspy-version"), "1.1.0", "{k:?}: {uri}");
            assert_eq!(header(&a, "x-dspy-project"), "default", "{k:?}: {uri}");
            assert_eq!(header(&a, "x-dspy-status"), "active", "{k:?}: {uri}");
            assert_eq!(
                header(&a, "x-dspy-created-at"),
                meta["created_at"].as_str().unwrap(),
                "{k:?}: {uri}"
            );
            assert_eq!(
                header(&a, "content-length"),
                ODD_PROGRAM.len().to_string(),
                "{k:?}: {uri}"
            );

            // Conditional reads: the same ETag (strong, weak, in a list, `*`) → 304 and no body.
            let etag = format!("\"{sha}\"");
            for inm in [
                etag.clone(),
                format!("W/{etag}"),
                format!("\"0000\", {etag}"),
                "*".to_owned(),
            ] {
                let a = c
                    .request(Method::GET, &uri, &[("if-none-match", &inm)], "")
                    .await;
                a.expect_status(k, &format!("{uri} If-None-Match {inm}"), 304);
                assert!(a.body.is_empty(), "{k:?}: {uri}: a 304 has no body");
                assert_eq!(header(&a, "etag"), etag, "{k:?}: {uri}: 304 keeps the ETag");
                assert_eq!(header(&a, "x-dspy-program-id"), id, "{k:?}: {uri}");
            }
            let a = c
                .request(
                    Method::GET,
                    &uri,
                    &[("if-none-match", &format!("\"{}\"", "0".repeat(64)))],
                    "",
                )
                .await;
            a.expect_status(k, &format!("{uri} other ETag"), 200);
            assert_eq!(&a.body[..], ODD_PROGRAM.as_bytes(), "{k:?}: {uri}");
        }
        // The JSON answer embeds the same text, but only this route hands back bytes that hash.
        let a = c.get("/signatures/Exact/versions/1.0.0/program").await;
        assert_eq!(&a.body[..], SMALL_PROGRAM.as_bytes(), "{k:?}: 1.0.0");
        assert_eq!(
            a.headers["x-dspy-program-id"],
            first["id"].as_str().unwrap(),
            "{k:?}"
        );
        let a = c
            .get("/signatures/Exact/versions/latest/program?project=p2")
            .await;
        a.expect_status(k, "p2 latest", 200);
        assert_eq!(
            &a.body[..],
            br#"{"other":  true}"#,
            "{k:?}: the project's own history"
        );
        assert_eq!(a.headers["x-dspy-project"], "p2", "{k:?}");
        assert_eq!(
            a.headers["x-dspy-program-id"],
            other["id"].as_str().unwrap(),
            "{k:?}"
        );

        // Errors as the sibling routes.
        for (uri, status, code) in [
            (
                "/programs/0190a5c2-7b1e-7c3d-8e4f-123456789abc/program",
                404,
                "not_found",
            ),
            ("/programs/not-an-id/program", 404, "not_found"),
            ("/signatures/Exact/versions/9.9.9/program", 404, "not_found"),
            (
                "/signatures/Exact/versions/latest/program?project=nobody",
                404,
                "not_found",
            ),
            (
                "/signatures/Exact/aliases/staging/program",
                404,
                "not_found",
            ),
            (
                "/signatures/NoSuch/versions/latest/program",
                404,
                "not_found",
            ),
            (
                "/signatures/Exact/versions/1.x/program",
                400,
                "invalid_request",
            ),
            (
                "/signatures/bad%20sig/versions/latest/program",
                400,
                "invalid_request",
            ),
        ] {
            let sibling = uri.trim_end_matches("/program").replace("/program?", "?");
            let a = c.get(uri).await;
            a.expect_error(k, uri, status, code);
            let b = c.get(&sibling).await;
            assert_eq!(b.status, a.status, "{k:?}: {uri} answers as {sibling}");
            assert_eq!(
                b.json(),
                a.json(),
                "{k:?}: {uri}: the same error as {sibling}"
            );
        }

        // Archived: 409 archived, as the JSON load.
        let first_id = first["id"].as_str().unwrap();
        c.post_json(&format!("/programs/{first_id}/archive"), &json!({}))
            .await
            .expect(k, "archive 1.0.0", 200);
        for uri in [
            format!("/programs/{first_id}/program"),
            "/signatures/Exact/versions/1.0.0/program".to_owned(),
        ] {
            c.get(&uri).await.expect_error(k, &uri, 409, "archived");
        }
        let etag = format!("\"{}\"", sha256_hex(SMALL_PROGRAM.as_bytes()));
        c.request(
            Method::GET,
            &format!("/programs/{first_id}/program"),
            &[("if-none-match", &etag)],
            "",
        )
        .await
        .expect_error(k, "archived with its ETag", 409, "archived");

        // A corrupted blob: 422 integrity_error, never the wrong bytes.
        let record = store_
            .storage
            .get_record(
                &dspy_storage_core::access::OPERATOR,
                &dspy_storage_core::domain::ProgramId::parse(&id).unwrap(),
            )
            .await
            .unwrap();
        let tampered = b"{\"predict\": 1}";
        store_
            .storage
            .blobs()
            .put(
                &record.blob_key,
                bytes::Bytes::from_static(tampered),
                &sha256_hex(tampered),
            )
            .await
            .unwrap();
        for uri in [
            format!("/programs/{id}/program"),
            "/signatures/Exact/versions/latest/program".to_owned(),
            "/signatures/Exact/aliases/production/program".to_owned(),
        ] {
            c.get(&uri)
                .await
                .expect_error(k, &uri, 422, "integrity_error");
        }
    }
}
