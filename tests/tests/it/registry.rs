//! The versioned registry through HTTP, on every backend of `backends()` (embedded always, AWS
//! when an endpoint is configured): semantic-version ordering and `latest`, signature listings and
//! projects, aliases with compare-and-set, rollback, delete (no dangling alias, ever), metadata
//! patches, `previous_version`, concurrency, the resolve cache and request counts.
//! Every failure names the backend it happened on.

use dspy_storage_core::access::OPERATOR;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dspy_storage_core::backend::{Index, Query};
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::ProgramId;
use dspy_storage_tests::{backends, backends_with, Answer, Client, Kind, TestStore};
use http::Method;
use serde_json::{json, Value};

// ----- helpers ---------------------------------------------------------------------------------

fn time(k: Kind, what: &str, v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{k:?}: {what} is not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{k:?}: {what} {s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The HTTP API of one backend, labelled by its kind.
#[derive(Clone)]
struct Api {
    k: Kind,
    c: Client,
}

impl Api {
    fn new(store: &TestStore) -> Self {
        Api {
            k: store.kind,
            c: store.client(),
        }
    }

    async fn send(&self, method: Method, uri: &str, body: Option<&Value>) -> Answer {
        match body {
            Some(b) => {
                self.c
                    .request(
                        method,
                        uri,
                        &[("content-type", "application/json")],
                        serde_json::to_vec(b).unwrap(),
                    )
                    .await
            }
            None => self.c.request(method, uri, &[], Vec::<u8>::new()).await,
        }
    }

    async fn send_raw(&self, method: Method, uri: &str, body: &str) -> Answer {
        self.c
            .request(
                method,
                uri,
                &[("content-type", "application/json")],
                body.to_owned(),
            )
            .await
    }

    /// Stores a unique program; `extra` is merged into the metadata. Answers the raw response.
    async fn try_store(&self, sig: &str, version: Option<&str>, extra: &Value) -> Answer {
        let mut metadata = json!({ "signature": sig });
        if let Some(v) = version {
            metadata["version"] = json!(v);
        }
        if let Some(m) = extra.as_object() {
            for (key, v) in m {
                metadata[key] = v.clone();
            }
        }
        let program = json!({
            "predictors": {"answer": {"instructions": format!("{sig} {version:?} {}", uuid::Uuid::now_v7())}}
        });
        self.c
            .post_json(
                "/programs",
                &json!({"program": program, "metadata": metadata}),
            )
            .await
    }

    /// Stores a unique program and asserts `201`.
    async fn store(&self, sig: &str, version: Option<&str>, extra: Value) -> Value {
        let a = self.try_store(sig, version, &extra).await;
        a.expect(self.k, &format!("store {sig} {version:?}"), 201)
    }

    /// `GET /signatures/{sig}/versions?project=`: the entries (asserts 200).
    async fn versions_in(&self, sig: &str, project: &str) -> Vec<Value> {
        let a = self
            .c
            .get(&format!("/signatures/{sig}/versions?project={project}"))
            .await;
        let v = a.expect(self.k, &format!("versions of {sig} in {project}"), 200);
        v["versions"]
            .as_array()
            .unwrap_or_else(|| panic!("{:?}: no versions array in {v}", self.k))
            .clone()
    }

    async fn versions(&self, sig: &str) -> Vec<Value> {
        self.versions_in(sig, "default").await
    }

    async fn version_names(&self, sig: &str) -> Vec<String> {
        self.versions(sig)
            .await
            .iter()
            .map(|e| s(&e["version"]))
            .collect()
    }

    /// The aliases by version as the versions listing shows them.
    async fn aliases_by_version(&self, sig: &str) -> BTreeMap<String, Vec<String>> {
        self.versions(sig)
            .await
            .iter()
            .map(|e| {
                let names = e["aliases"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{:?}: entry without aliases: {e}", self.k))
                    .iter()
                    .map(s)
                    .collect();
                (s(&e["version"]), names)
            })
            .collect()
    }

    /// `GET /signatures/{sig}/versions/latest` (asserts 200).
    async fn latest(&self, sig: &str) -> Value {
        let a = self
            .c
            .get(&format!("/signatures/{sig}/versions/latest"))
            .await;
        a.expect(self.k, &format!("latest of {sig}"), 200)
    }

    async fn latest_version(&self, sig: &str) -> String {
        s(&self.latest(sig).await["version"])
    }

    async fn signatures(&self, project: &str) -> Vec<Value> {
        let a = self.c.get(&format!("/signatures?project={project}")).await;
        let v = a.expect(self.k, &format!("signatures of {project}"), 200);
        v["signatures"]
            .as_array()
            .unwrap_or_else(|| panic!("{:?}: no signatures array in {v}", self.k))
            .clone()
    }

    async fn signature_summary(&self, project: &str, sig: &str) -> Option<Value> {
        self.signatures(project)
            .await
            .into_iter()
            .find(|e| e["signature"] == sig)
    }

    async fn put_alias(&self, sig: &str, alias: &str, body: Value) -> Answer {
        self.send(
            Method::PUT,
            &format!("/signatures/{sig}/aliases/{alias}"),
            Some(&body),
        )
        .await
    }

    async fn get_alias(&self, sig: &str, alias: &str) -> Answer {
        self.c
            .get(&format!("/signatures/{sig}/aliases/{alias}"))
            .await
    }

    /// The version an alias points at, `None` when it does not exist (404).
    async fn alias_version(&self, sig: &str, alias: &str) -> Option<String> {
        let a = self.get_alias(sig, alias).await;
        if a.status.as_u16() == 404 {
            a.expect_error(self.k, &format!("GET alias {alias}"), 404, "not_found");
            return None;
        }
        Some(s(
            &a.expect(self.k, &format!("GET alias {alias}"), 200)["version"]
        ))
    }

    async fn patch(&self, id: &str, body: Value) -> Answer {
        self.send(
            Method::PATCH,
            &format!("/programs/{id}/metadata"),
            Some(&body),
        )
        .await
    }

    async fn metadata(&self, id: &str) -> Value {
        let a = self.c.get(&format!("/programs/{id}/metadata")).await;
        a.expect(self.k, &format!("metadata of {id}"), 200)
    }

    async fn delete(&self, uri: &str) -> Answer {
        self.send(Method::DELETE, uri, None).await
    }
}

// ----- ordering, latest, listings --------------------------------------------------------------

#[tokio::test]
async fn versions_are_ordered_by_semver_and_latest_is_the_highest() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        // Stored out of order; `latest` after each store is the highest so far.
        let steps = [
            ("1.10.0", "1.10.0"),
            ("2.0.0-rc.10", "2.0.0-rc.10"),
            ("1.9.0", "2.0.0-rc.10"),
            ("2.0.0", "2.0.0"),
            ("2.0.0-rc.1", "2.0.0"),
            ("0.9.0", "2.0.0"),
            ("1.11.0", "2.0.0"),
            ("1.0.0", "2.0.0"),
            ("2.0.0-rc.2", "2.0.0"),
        ];
        let mut ids = BTreeMap::new();
        for (version, latest) in steps {
            let stored = api
                .store("qa.Order", Some(version), json!({"performance": 0.5}))
                .await;
            assert_eq!(stored["version"], version, "{k:?}");
            ids.insert(version.to_owned(), s(&stored["id"]));
            assert_eq!(
                api.latest_version("qa.Order").await,
                latest,
                "{k:?}: latest after storing {version}"
            );
        }
        let entries = api.versions("qa.Order").await;
        let names: Vec<String> = entries.iter().map(|e| s(&e["version"])).collect();
        assert_eq!(
            names,
            [
                "0.9.0",
                "1.0.0",
                "1.9.0",
                "1.10.0",
                "1.11.0",
                "2.0.0-rc.1",
                "2.0.0-rc.2",
                "2.0.0-rc.10",
                "2.0.0"
            ],
            "{k:?}: semantic-version order"
        );
        for e in &entries {
            let v = s(&e["version"]);
            assert_eq!(e["id"], ids[&v], "{k:?}: id of {v}");
            assert_eq!(e["aliases"], json!([]), "{k:?}: aliases of {v}");
            assert_eq!(e["performance"], json!(0.5), "{k:?}: performance of {v}");
            assert!(e["size"].as_u64().is_some_and(|n| n > 0), "{k:?}: {e}");
            time(k, "created_at", &e["created_at"]);
        }
        // The latest read answers the highest version's program.
        let latest = api.latest("qa.Order").await;
        assert_eq!(latest["id"], ids["2.0.0"], "{k:?}");
        // An auto version is the next patch after the highest, not after the newest by time.
        let auto = api.store("qa.Order", None, json!({})).await;
        assert_eq!(auto["version"], "2.0.1", "{k:?}: auto version");
        assert_eq!(api.latest_version("qa.Order").await, "2.0.1", "{k:?}");
        // A pre-release latest: the next auto version is its release.
        api.store("qa.Pre", Some("3.0.0-rc.1"), json!({})).await;
        let auto = api.store("qa.Pre", None, json!({})).await;
        assert_eq!(auto["version"], "3.0.0", "{k:?}: release after its rc");
    }
}

#[tokio::test]
async fn signatures_are_listed_per_project() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        for p in [0.5, 0.8, 0.7] {
            api.store("qa.A", None, json!({ "performance": p })).await;
        }
        api.store("qa.B", Some("0.1.0"), json!({})).await;
        let other = api
            .store(
                "qa.A",
                Some("5.0.0"),
                json!({"project": "other", "performance": 0.1}),
            )
            .await;

        let list = api.signatures("default").await;
        let names: BTreeSet<String> = list.iter().map(|e| s(&e["signature"])).collect();
        assert_eq!(
            names,
            BTreeSet::from(["qa.A".to_owned(), "qa.B".to_owned()]),
            "{k:?}: {list:?}"
        );
        let a = api.signature_summary("default", "qa.A").await.unwrap();
        assert_eq!(a["versions"], 3, "{k:?}: {a}");
        assert_eq!(a["latest_version"], "1.0.2", "{k:?}: {a}");
        assert_eq!(a["best_performance"], json!(0.8), "{k:?}: {a}");
        time(k, "updated_at", &a["updated_at"]);
        let b = api.signature_summary("default", "qa.B").await.unwrap();
        assert_eq!(b["versions"], 1, "{k:?}: {b}");
        assert_eq!(b["latest_version"], "0.1.0", "{k:?}: {b}");
        assert_eq!(b["best_performance"], Value::Null, "{k:?}: {b}");

        let list = api.signatures("other").await;
        assert_eq!(list.len(), 1, "{k:?}: {list:?}");
        assert_eq!(list[0]["signature"], "qa.A", "{k:?}");
        assert_eq!(list[0]["versions"], 1, "{k:?}");
        assert_eq!(list[0]["latest_version"], "5.0.0", "{k:?}");
        assert_eq!(list[0]["best_performance"], json!(0.1), "{k:?}");
        assert!(api.signatures("nobody").await.is_empty(), "{k:?}");

        // Two independent version histories.
        let names: Vec<String> = api
            .versions_in("qa.A", "other")
            .await
            .iter()
            .map(|e| s(&e["version"]))
            .collect();
        assert_eq!(names, ["5.0.0"], "{k:?}");
        assert_eq!(
            api.version_names("qa.A").await,
            ["1.0.0", "1.0.1", "1.0.2"],
            "{k:?}"
        );
        let a = api
            .c
            .get("/signatures/qa.A/versions/latest?project=other")
            .await;
        assert_eq!(a.expect(k, "latest in other", 200)["id"], other["id"]);
        assert_eq!(api.latest_version("qa.A").await, "1.0.2", "{k:?}");
        let a = api.c.get("/signatures/qa.B/versions?project=other").await;
        a.expect_error(k, "qa.B in other", 404, "not_found");
        // An alias in one project is not one in the other.
        let a = api
            .send(
                Method::PUT,
                "/signatures/qa.A/aliases/prod?project=other",
                Some(&json!({"version": "5.0.0"})),
            )
            .await;
        a.expect(k, "alias in other", 200);
        let a = api
            .c
            .get("/signatures/qa.A/aliases/prod?project=other")
            .await;
        assert_eq!(a.expect(k, "GET alias in other", 200)["id"], other["id"]);
        assert_eq!(api.alias_version("qa.A", "prod").await, None, "{k:?}");
        // 1.0.0 exists only in default: the alias in other cannot point at it.
        let a = api
            .send(
                Method::PUT,
                "/signatures/qa.A/aliases/prod?project=other",
                Some(&json!({"version": "1.0.0"})),
            )
            .await;
        a.expect_error(k, "alias to a version of another project", 404, "not_found");
    }
}

// ----- aliases ---------------------------------------------------------------------------------

#[tokio::test]
async fn aliases_point_at_versions_with_compare_and_set() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        let mut ids = BTreeMap::new();
        for v in ["1.0.0", "1.1.0", "1.2.0"] {
            ids.insert(v, api.store("qa.Alias", Some(v), json!({})).await);
        }
        let a = api
            .put_alias("qa.Alias", "production", json!({"version": "1.0.0"}))
            .await;
        let put = a.expect(k, "PUT production", 200);
        assert_eq!(put["version"], "1.0.0", "{k:?}: {put}");
        assert_eq!(put["id"], ids["1.0.0"]["id"], "{k:?}: {put}");
        assert_eq!(put["alias"], "production", "{k:?}: {put}");

        // GET answers the program, as GET /programs/{id}.
        let a = api.get_alias("qa.Alias", "production").await;
        let got = a.expect(k, "GET production", 200);
        let by_id = api
            .c
            .get(&format!("/programs/{}", s(&ids["1.0.0"]["id"])))
            .await;
        assert_eq!(a.raw_program(), by_id.raw_program(), "{k:?}");
        assert_eq!(got["id"], ids["1.0.0"]["id"], "{k:?}");
        assert_eq!(got["version"], "1.0.0", "{k:?}");
        assert_eq!(got["sha256"], ids["1.0.0"]["sha256"], "{k:?}");
        assert_eq!(
            api.aliases_by_version("qa.Alias").await,
            BTreeMap::from([
                ("1.0.0".to_owned(), vec!["production".to_owned()]),
                ("1.1.0".to_owned(), vec![]),
                ("1.2.0".to_owned(), vec![]),
            ]),
            "{k:?}"
        );

        // A missing version: 404 and nothing changes.
        let a = api
            .put_alias("qa.Alias", "production", json!({"version": "9.9.9"}))
            .await;
        a.expect_error(k, "PUT alias to a missing version", 404, "not_found");
        let a = api
            .put_alias("qa.Alias", "staging", json!({"version": "9.9.9"}))
            .await;
        a.expect_error(k, "PUT new alias to a missing version", 404, "not_found");
        assert_eq!(
            api.alias_version("qa.Alias", "production").await.as_deref(),
            Some("1.0.0"),
            "{k:?}"
        );
        assert_eq!(
            api.alias_version("qa.Alias", "staging").await,
            None,
            "{k:?}"
        );
        let a = api
            .put_alias("qa.Nope", "production", json!({"version": "1.0.0"}))
            .await;
        a.expect_error(k, "PUT alias on an unknown signature", 404, "not_found");

        // Bad names and bodies: 400.
        for name in ["Prod", "a%2Fb", &"a".repeat(65), "caf%C3%A9"] {
            let a = api
                .put_alias("qa.Alias", name, json!({"version": "1.1.0"}))
                .await;
            a.expect_error(k, &format!("PUT alias {name:?}"), 400, "invalid_request");
            let a = api.get_alias("qa.Alias", name).await;
            a.expect_error(k, &format!("GET alias {name:?}"), 400, "invalid_request");
        }
        for body in [
            json!({}),
            json!({"version": "one"}),
            json!({"version": 1}),
            json!({"version": "1.1.0", "expected_version": "x"}),
            json!({"version": "1.1.0", "extra": true}),
        ] {
            let a = api.put_alias("qa.Alias", "production", body.clone()).await;
            a.expect_error(k, &format!("PUT alias {body}"), 400, "invalid_request");
        }
        let longest = "a".repeat(64);
        let a = api
            .put_alias("qa.Alias", &longest, json!({"version": "1.1.0"}))
            .await;
        a.expect(k, "64-character alias", 200);
        let a = api
            .delete(&format!("/signatures/qa.Alias/aliases/{longest}"))
            .await;
        a.expect(k, "DELETE 64-character alias", 204);
        assert_eq!(
            api.alias_version("qa.Alias", "production").await.as_deref(),
            Some("1.0.0"),
            "{k:?}: bad requests left the alias alone"
        );

        // Compare-and-set.
        let a = api
            .put_alias(
                "qa.Alias",
                "production",
                json!({"version": "1.1.0", "expected_version": "1.0.0"}),
            )
            .await;
        assert_eq!(a.expect(k, "CAS right", 200)["version"], "1.1.0");
        let a = api
            .put_alias(
                "qa.Alias",
                "production",
                json!({"version": "1.2.0", "expected_version": "1.0.0"}),
            )
            .await;
        a.expect_error(k, "CAS wrong", 409, "conflict");
        assert_eq!(
            api.alias_version("qa.Alias", "production").await.as_deref(),
            Some("1.1.0"),
            "{k:?}: a lost CAS leaves the alias"
        );
        // `expected_version: null` = must not exist yet.
        let a = api
            .put_alias(
                "qa.Alias",
                "canary",
                json!({"version": "1.2.0", "expected_version": null}),
            )
            .await;
        a.expect(k, "CAS create", 200);
        let a = api
            .put_alias(
                "qa.Alias",
                "canary",
                json!({"version": "1.0.0", "expected_version": null}),
            )
            .await;
        a.expect_error(k, "CAS create of an existing alias", 409, "conflict");
        let a = api
            .put_alias(
                "qa.Alias",
                "production",
                json!({"version": "1.0.0", "expected_version": null}),
            )
            .await;
        a.expect_error(k, "CAS create of production", 409, "conflict");
        // A version expected of a missing alias: it moved (or never existed).
        let a = api
            .put_alias(
                "qa.Alias",
                "nightly",
                json!({"version": "1.0.0", "expected_version": "1.0.0"}),
            )
            .await;
        a.expect_error(k, "CAS of a missing alias", 409, "conflict");
        assert_eq!(
            api.alias_version("qa.Alias", "nightly").await,
            None,
            "{k:?}"
        );
        assert_eq!(
            api.aliases_by_version("qa.Alias").await,
            BTreeMap::from([
                ("1.0.0".to_owned(), vec![]),
                ("1.1.0".to_owned(), vec!["production".to_owned()]),
                ("1.2.0".to_owned(), vec!["canary".to_owned()]),
            ]),
            "{k:?}"
        );
        // Unconditional move.
        let a = api
            .put_alias("qa.Alias", "canary", json!({"version": "1.1.0"}))
            .await;
        a.expect(k, "unconditional move", 200);
        let mut both = api.aliases_by_version("qa.Alias").await["1.1.0"].clone();
        both.sort();
        assert_eq!(both, ["canary", "production"], "{k:?}");

        // DELETE.
        let a = api.delete("/signatures/qa.Alias/aliases/canary").await;
        a.expect(k, "DELETE canary", 204);
        assert!(a.body.is_empty(), "{k:?}: 204 has no body");
        let a = api.get_alias("qa.Alias", "canary").await;
        a.expect_error(k, "GET deleted alias", 404, "not_found");
        let a = api.delete("/signatures/qa.Alias/aliases/canary").await;
        a.expect_error(k, "DELETE deleted alias", 404, "not_found");
        let a = api.delete("/signatures/qa.Alias/aliases/never").await;
        a.expect_error(k, "DELETE missing alias", 404, "not_found");
        let a = api.delete("/signatures/qa.Nope/aliases/never").await;
        a.expect_error(k, "DELETE alias of unknown signature", 404, "not_found");
        assert_eq!(
            api.alias_version("qa.Alias", "production").await.as_deref(),
            Some("1.1.0"),
            "{k:?}: the other alias stays"
        );
        // All three versions are still there.
        assert_eq!(
            api.version_names("qa.Alias").await,
            ["1.0.0", "1.1.0", "1.2.0"],
            "{k:?}"
        );
    }
}

// ----- rollback --------------------------------------------------------------------------------

#[tokio::test]
async fn rollback_is_a_new_version_identical_to_the_target() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        // A program with its own spacing, key order and number spelling.
        let program = r#"{"zeta": 1.50,  "alpha": [1, 2e3, "x"], "predictors": {"p": {"instructions": "Be brief."}}}"#;
        let body = format!(
            r#"{{"program": {program}, "metadata": {{"signature": "qa.Roll", "version": "1.0.0", "performance": 0.6, "tags": ["gold"], "team": "red"}}}}"#
        );
        let a = api.c.post_raw("/programs", body).await;
        let first = a.expect(k, "store 1.0.0", 201);
        api.store("qa.Roll", Some("1.1.0"), json!({})).await;
        let v12 = api.store("qa.Roll", Some("1.2.0"), json!({})).await;
        assert_eq!(api.latest("qa.Roll").await["id"], v12["id"]);

        let a = api
            .c
            .post_json(
                "/signatures/qa.Roll/rollback",
                &json!({"to_version": "1.0.0"}),
            )
            .await;
        let rolled = a.expect(k, "rollback to 1.0.0", 201);
        assert_eq!(rolled["version"], "1.2.1", "{k:?}: next patch after latest");
        assert_eq!(rolled["signature"], "qa.Roll", "{k:?}");
        assert_eq!(rolled["sha256"], first["sha256"], "{k:?}: same sha256");
        assert_eq!(rolled["size"], first["size"], "{k:?}: same size");
        assert_ne!(rolled["id"], first["id"], "{k:?}: a new program");

        let a = api.c.get(&format!("/programs/{}", s(&rolled["id"]))).await;
        let got = a.expect(k, "GET rolled back", 200);
        assert_eq!(a.raw_program(), program, "{k:?}: byte-identical program");
        assert_eq!(got["sha256"], first["sha256"], "{k:?}");
        assert_eq!(got["version"], "1.2.1", "{k:?}");
        let m = &got["metadata"];
        assert_eq!(m["rollback_from"], "1.2.0", "{k:?}: {m}");
        assert_eq!(m["rollback_to"], "1.0.0", "{k:?}: {m}");
        let ts = time(k, "rollback_timestamp", &m["rollback_timestamp"]);
        assert!(
            (chrono::Utc::now() - ts).num_seconds().abs() < 120,
            "{k:?}: rollback_timestamp {ts}"
        );
        assert_eq!(m["version"], "1.2.1", "{k:?}: {m}");
        assert_eq!(
            m["team"], "red",
            "{k:?}: the target's metadata is kept: {m}"
        );
        assert_eq!(got["previous_version"], "1.2.0", "{k:?}");

        // It becomes latest.
        let latest = api.latest("qa.Roll").await;
        assert_eq!(latest["id"], rolled["id"], "{k:?}: rollback is latest");
        let a = api.c.get("/signatures/qa.Roll/versions/latest").await;
        assert_eq!(a.raw_program(), program, "{k:?}");
        assert_eq!(
            api.version_names("qa.Roll").await,
            ["1.0.0", "1.1.0", "1.2.0", "1.2.1"],
            "{k:?}"
        );
        // A second rollback: rollback_from is the rollback.
        let a = api
            .c
            .post_json(
                "/signatures/qa.Roll/rollback",
                &json!({"to_version": "1.1.0"}),
            )
            .await;
        let again = a.expect(k, "rollback to 1.1.0", 201);
        assert_eq!(again["version"], "1.2.2", "{k:?}");
        let m = api.metadata(&s(&again["id"])).await["metadata"].clone();
        assert_eq!(m["rollback_from"], "1.2.1", "{k:?}: {m}");
        assert_eq!(m["rollback_to"], "1.1.0", "{k:?}: {m}");

        // Unknown target or signature: 404; bad bodies: 400. Nothing new is stored.
        let a = api
            .c
            .post_json(
                "/signatures/qa.Roll/rollback",
                &json!({"to_version": "9.9.9"}),
            )
            .await;
        a.expect_error(k, "rollback to unknown version", 404, "not_found");
        let a = api
            .c
            .post_json(
                "/signatures/qa.Nope/rollback",
                &json!({"to_version": "1.0.0"}),
            )
            .await;
        a.expect_error(k, "rollback of unknown signature", 404, "not_found");
        for body in [
            "{}",
            r#"{"to_version": "one"}"#,
            r#"{"to_version": 1}"#,
            r#"{"to_version": "1.0.0", "extra": 1}"#,
            "not json",
            "[]",
        ] {
            let a = api.c.post_raw("/signatures/qa.Roll/rollback", body).await;
            a.expect_error(k, &format!("rollback body {body}"), 400, "invalid_request");
        }
        assert_eq!(
            api.version_names("qa.Roll").await,
            ["1.0.0", "1.1.0", "1.2.0", "1.2.1", "1.2.2"],
            "{k:?}: failed rollbacks store nothing"
        );
        assert_eq!(api.latest_version("qa.Roll").await, "1.2.2", "{k:?}");
    }
}

// ----- delete ----------------------------------------------------------------------------------

async fn blob_keys(store: &TestStore) -> BTreeSet<String> {
    let (items, _) = store
        .storage
        .blobs()
        .list("programs/", None, 1000)
        .await
        .expect("list blobs");
    items.into_iter().map(|b| b.key).collect()
}

/// The program ids a tag's index partition (`TAG#<project>#<tag>`) holds.
async fn tag_entries(store: &TestStore, tag: &str) -> Vec<String> {
    let page = store
        .storage
        .items()
        .query(&Query::new(Index::Table, format!("TAG#default#{tag}")))
        .await
        .expect("query tag entries");
    page.items
        .iter()
        .filter_map(|i| i.get("id").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn delete_keeps_aliases_latest_and_best_consistent() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        let v100 = api
            .store("qa.Del", Some("1.0.0"), json!({"performance": 0.9}))
            .await;
        let v110 = api
            .store("qa.Del", Some("1.1.0"), json!({"performance": 0.5}))
            .await;
        let v120 = api
            .store(
                "qa.Del",
                Some("1.2.0"),
                json!({"performance": 0.7, "tags": ["gold", "gone"]}),
            )
            .await;
        let other = api.store("qa.Other", None, json!({})).await;
        let a = api
            .put_alias("qa.Del", "prod", json!({"version": "1.2.0"}))
            .await;
        a.expect(k, "alias prod", 200);
        let id120 = s(&v120["id"]);
        let record = store
            .storage
            .get_record(&OPERATOR, &ProgramId::parse(&id120).unwrap())
            .await
            .expect("record of 1.2.0");
        let blobs = blob_keys(&store).await;
        assert!(blobs.contains(&record.blob_key), "{k:?}: {blobs:?}");
        assert_eq!(blobs.len(), 4, "{k:?}: {blobs:?}");
        assert_eq!(
            tag_entries(&store, "gold").await,
            std::slice::from_ref(&id120),
            "{k:?}"
        );

        // An alias target is refused without force; nothing changes.
        let a = api.delete(&format!("/programs/{id120}")).await;
        a.expect_error(k, "delete an alias target", 409, "conflict");
        let a = api.delete(&format!("/programs/{id120}?force=false")).await;
        a.expect_error(k, "delete an alias target, force=false", 409, "conflict");
        let a = api.delete(&format!("/programs/{id120}?force=maybe")).await;
        a.expect_error(k, "delete with a bad force", 400, "invalid_request");
        api.c
            .get(&format!("/programs/{id120}"))
            .await
            .expect(k, "still there", 200);
        assert_eq!(
            api.alias_version("qa.Del", "prod").await.as_deref(),
            Some("1.2.0")
        );
        assert_eq!(api.latest_version("qa.Del").await, "1.2.0", "{k:?}");
        assert!(blob_keys(&store).await.contains(&record.blob_key), "{k:?}");

        // With force: the program, its alias and its blob go; latest is recomputed.
        let a = api.delete(&format!("/programs/{id120}?force=true")).await;
        a.expect(k, "forced delete", 204);
        let a = api.c.get(&format!("/programs/{id120}")).await;
        a.expect_error(k, "GET deleted", 404, "not_found");
        let a = api.c.get(&format!("/programs/{id120}/metadata")).await;
        a.expect_error(k, "GET deleted metadata", 404, "not_found");
        let a = api.get_alias("qa.Del", "prod").await;
        a.expect_error(k, "GET alias of deleted", 404, "not_found");
        assert_eq!(
            api.aliases_by_version("qa.Del").await,
            BTreeMap::from([("1.0.0".to_owned(), vec![]), ("1.1.0".to_owned(), vec![])]),
            "{k:?}: no dangling alias"
        );
        let latest = api.latest("qa.Del").await;
        assert_eq!(latest["version"], "1.1.0", "{k:?}: latest recomputed");
        assert_eq!(latest["id"], v110["id"], "{k:?}");
        let a = api.c.get("/signatures/qa.Del/versions/1.2.0").await;
        a.expect_error(k, "GET deleted version", 404, "not_found");
        let blobs = blob_keys(&store).await;
        assert!(!blobs.contains(&record.blob_key), "{k:?}: blob removed");
        assert_eq!(blobs.len(), 3, "{k:?}: only that blob removed: {blobs:?}");
        assert!(
            tag_entries(&store, "gold").await.is_empty(),
            "{k:?}: tag entry removed"
        );
        assert!(
            tag_entries(&store, "gone").await.is_empty(),
            "{k:?}: tag entry removed"
        );
        let sum = api.signature_summary("default", "qa.Del").await.unwrap();
        assert_eq!(sum["versions"], 2, "{k:?}: {sum}");
        assert_eq!(sum["latest_version"], "1.1.0", "{k:?}: {sum}");
        assert_eq!(sum["best_performance"], json!(0.9), "{k:?}: {sum}");
        // The alias cannot be pointed at the deleted version.
        let a = api
            .put_alias("qa.Del", "prod", json!({"version": "1.2.0"}))
            .await;
        a.expect_error(k, "alias to deleted version", 404, "not_found");
        let a = api.delete(&format!("/programs/{id120}")).await;
        a.expect_error(k, "delete twice", 404, "not_found");

        // Deleting the best recomputes best_performance (1.0.0 is not the latest).
        let a = api.delete(&format!("/programs/{}", s(&v100["id"]))).await;
        a.expect(k, "delete the best", 204);
        let sum = api.signature_summary("default", "qa.Del").await.unwrap();
        assert_eq!(sum["versions"], 1, "{k:?}: {sum}");
        assert_eq!(sum["latest_version"], "1.1.0", "{k:?}: {sum}");
        assert_eq!(sum["best_performance"], json!(0.5), "{k:?}: {sum}");
        assert_eq!(api.version_names("qa.Del").await, ["1.1.0"], "{k:?}");

        // A version number freed by a delete can be stored again; the auto version follows latest.
        let auto = api.store("qa.Del", None, json!({})).await;
        assert_eq!(auto["version"], "1.1.1", "{k:?}");
        let a = api.delete(&format!("/programs/{}", s(&auto["id"]))).await;
        a.expect(k, "delete auto", 204);

        // Deleting the only version removes the signature.
        let a = api.delete(&format!("/programs/{}", s(&v110["id"]))).await;
        a.expect(k, "delete the only version", 204);
        let a = api.c.get("/signatures/qa.Del/versions").await;
        a.expect_error(k, "versions of a removed signature", 404, "not_found");
        let a = api.c.get("/signatures/qa.Del/versions/latest").await;
        a.expect_error(k, "latest of a removed signature", 404, "not_found");
        let names: Vec<String> = api
            .signatures("default")
            .await
            .iter()
            .map(|e| s(&e["signature"]))
            .collect();
        assert_eq!(names, ["qa.Other"], "{k:?}: listing after delete");
        let blobs = blob_keys(&store).await;
        assert_eq!(blobs.len(), 1, "{k:?}: {blobs:?}");
        // The other signature is untouched, and the removed one starts over.
        assert_eq!(api.latest("qa.Other").await["id"], other["id"], "{k:?}");
        let fresh = api.store("qa.Del", None, json!({})).await;
        assert_eq!(fresh["version"], "1.0.0", "{k:?}: history starts over");

        let a = api.delete(&format!("/programs/{}", ProgramId::new())).await;
        a.expect_error(k, "delete unknown id", 404, "not_found");
    }
}

// ----- metadata patch --------------------------------------------------------------------------

#[tokio::test]
async fn metadata_patch_merges_and_compares_and_sets() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        let stored = api
            .store("qa.Patch",
                Some("1.0.0"),
                json!({"tags": ["a", "b"], "environment": "dev", "description": "first", "owner": "x"}),
            )
            .await;
        let id = s(&stored["id"]);
        let before = api.c.get(&format!("/programs/{id}")).await;
        let program = before.raw_program();

        let a = api
            .patch(&id, json!({"tags": {"add": ["c", "b"], "remove": ["a"]}}))
            .await;
        let v = a.expect(k, "patch tags", 200);
        assert_eq!(v["metadata"]["tags"], json!(["b", "c"]), "{k:?}: {v}");
        assert!(
            v.get("program").is_none(),
            "{k:?}: no program in the answer"
        );
        assert_eq!(
            api.metadata(&id).await["metadata"]["tags"],
            json!(["b", "c"]),
            "{k:?}"
        );
        assert!(
            tag_entries(&store, "a").await.is_empty(),
            "{k:?}: a unindexed"
        );
        assert_eq!(
            tag_entries(&store, "b").await,
            std::slice::from_ref(&id),
            "{k:?}"
        );
        assert_eq!(
            tag_entries(&store, "c").await,
            std::slice::from_ref(&id),
            "{k:?}: c indexed"
        );

        let a = api
            .patch(&id, json!({"environment": "prod", "description": null}))
            .await;
        let m = a.expect(k, "patch env/description", 200)["metadata"].clone();
        assert_eq!(m["environment"], "prod", "{k:?}: {m}");
        assert!(
            m.get("description").is_none(),
            "{k:?}: description removed: {m}"
        );
        let a = api.patch(&id, json!({"environment": null})).await;
        let m = a.expect(k, "remove environment", 200)["metadata"].clone();
        assert!(m.get("environment").is_none(), "{k:?}: {m}");
        let a = api.patch(&id, json!({"description": "second"})).await;
        let m = a.expect(k, "set description", 200)["metadata"].clone();
        assert_eq!(m["description"], "second", "{k:?}: {m}");

        let a = api
            .patch(
                &id,
                json!({"set": {"reviewer": "bob", "score_notes": {"n": 1}, "owner": null}}),
            )
            .await;
        let m = a.expect(k, "patch set", 200)["metadata"].clone();
        assert_eq!(m["reviewer"], "bob", "{k:?}: {m}");
        assert_eq!(m["score_notes"], json!({"n": 1}), "{k:?}: {m}");
        assert!(m.get("owner").is_none(), "{k:?}: set null removes: {m}");

        // Identity never changes: 400 and nothing changed.
        let snapshot = api.metadata(&id).await;
        for body in [
            json!({"set": {"signature": "qa.Other"}}),
            json!({"set": {"version": "9.0.0"}}),
            json!({"set": {"project": "other"}}),
            json!({"set": {"signature": null}}),
            json!({"description": "x", "set": {"version": "9.0.0"}}),
            json!({"nope": 1}),
            json!({"tags": ["x"]}),
            json!({"tags": {"add": ["x"], "bogus": []}}),
            json!({"environment": 3}),
            json!({"expected_updated_at": "yesterday"}),
            json!([1]),
        ] {
            let a = api.patch(&id, body.clone()).await;
            a.expect_error(k, &format!("patch {body}"), 400, "invalid_request");
        }
        let a = api.request_raw_patch(&id, "{not json").await;
        a.expect_error(k, "patch malformed JSON", 400, "invalid_request");
        assert_eq!(api.metadata(&id).await, snapshot, "{k:?}: nothing changed");
        assert_eq!(snapshot["version"], "1.0.0", "{k:?}");
        assert_eq!(snapshot["signature"], "qa.Patch", "{k:?}");
        assert_eq!(snapshot["project"], "default", "{k:?}");

        // Compare-and-set on updated_at.
        let t0 = s(&snapshot["updated_at"]);
        let a = api
            .patch(
                &id,
                json!({"set": {"stage": "one"}, "expected_updated_at": t0}),
            )
            .await;
        let v = a.expect(k, "CAS patch", 200);
        assert_eq!(v["metadata"]["stage"], "one", "{k:?}");
        let t1 = s(&v["updated_at"]);
        assert!(
            time(k, "t1", &json!(t1)) > time(k, "t0", &json!(t0)),
            "{k:?}: updated_at moves forward: {t0} -> {t1}"
        );
        assert_eq!(v["created_at"], snapshot["created_at"], "{k:?}");
        let a = api
            .patch(
                &id,
                json!({"set": {"stage": "two"}, "expected_updated_at": t0}),
            )
            .await;
        a.expect_error(k, "stale CAS patch", 409, "conflict");
        let now = api.metadata(&id).await;
        assert_eq!(
            now["metadata"]["stage"], "one",
            "{k:?}: stale CAS changed nothing"
        );
        assert_eq!(now["updated_at"], t1, "{k:?}");
        let a = api
            .patch(
                &id,
                json!({"set": {"stage": "two"}, "expected_updated_at": t1}),
            )
            .await;
        a.expect(k, "second CAS patch", 200);

        let a = api
            .patch(&ProgramId::new().to_string(), json!({"description": "x"}))
            .await;
        a.expect_error(k, "patch unknown id", 404, "not_found");
        let a = api.patch("not-an-id", json!({"description": "x"})).await;
        a.expect_error(k, "patch malformed id", 404, "not_found");

        // Content, version and identity are unchanged after all of it.
        let after = api.c.get(&format!("/programs/{id}")).await;
        let v = after.expect(k, "GET after patches", 200);
        assert_eq!(after.raw_program(), program, "{k:?}: content unchanged");
        assert_eq!(v["sha256"], stored["sha256"], "{k:?}");
        assert_eq!(v["version"], "1.0.0", "{k:?}");
        assert_eq!(v["metadata"]["signature"], "qa.Patch", "{k:?}");
        assert_eq!(v["metadata"]["version"], "1.0.0", "{k:?}");
        assert_eq!(api.version_names("qa.Patch").await, ["1.0.0"], "{k:?}");
    }
}

impl Api {
    async fn request_raw_patch(&self, id: &str, body: &str) -> Answer {
        self.send_raw(Method::PATCH, &format!("/programs/{id}/metadata"), body)
            .await
    }
}

// ----- previous_version ------------------------------------------------------------------------

#[tokio::test]
async fn every_version_records_the_previous_latest() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        let steps: [(Option<&str>, &str, Option<&str>); 5] = [
            (Some("1.0.0"), "1.0.0", None),
            (Some("1.2.0"), "1.2.0", Some("1.0.0")),
            (Some("1.1.0"), "1.1.0", Some("1.2.0")),
            (None, "1.2.1", Some("1.2.0")),
            (Some("1.2.1-rc.1"), "1.2.1-rc.1", Some("1.2.1")),
        ];
        for (version, expected, previous) in steps {
            let stored = api.store("qa.Prev", version, json!({})).await;
            assert_eq!(stored["version"], expected, "{k:?}");
            let a = api.c.get(&format!("/programs/{}", s(&stored["id"]))).await;
            let v = a.expect(k, "GET stored", 200);
            match previous {
                Some(p) => assert_eq!(v["previous_version"], p, "{k:?}: {expected}"),
                None => assert_eq!(
                    v.get("previous_version").cloned().unwrap_or(Value::Null),
                    Value::Null,
                    "{k:?}: the first version has no previous: {v}"
                ),
            }
            assert_eq!(
                api.metadata(&s(&stored["id"])).await["previous_version"],
                v["previous_version"],
                "{k:?}"
            );
        }
    }
}

// ----- concurrency -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_of_one_version_have_one_winner() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        api.store("qa.Race", Some("1.0.0"), json!({})).await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let api = api.clone();
                tokio::spawn(
                    async move { api.try_store("qa.Race", Some("3.0.0"), &json!({})).await },
                )
            })
            .collect();
        let mut winners = Vec::new();
        let mut conflicts = 0;
        for t in tasks {
            let a = t.await.expect("task");
            match a.status.as_u16() {
                201 => winners.push(a.json()),
                409 => {
                    a.assert_error(409, "conflict");
                    conflicts += 1;
                }
                other => panic!(
                    "{k:?}: unexpected {other}: {}",
                    String::from_utf8_lossy(&a.body)
                ),
            }
        }
        assert_eq!(winners.len(), 1, "{k:?}: exactly one 201: {winners:?}");
        assert_eq!(conflicts, 49, "{k:?}: the rest 409");
        let entries = api.versions("qa.Race").await;
        assert_eq!(entries.len(), 2, "{k:?}: {entries:?}");
        assert_eq!(entries[1]["version"], "3.0.0", "{k:?}");
        assert_eq!(
            entries[1]["id"], winners[0]["id"],
            "{k:?}: the winner's program"
        );
        let latest = api.latest("qa.Race").await;
        assert_eq!(latest["id"], winners[0]["id"], "{k:?}");
        assert_eq!(latest["sha256"], winners[0]["sha256"], "{k:?}");
        let sum = api.signature_summary("default", "qa.Race").await.unwrap();
        assert_eq!(sum["versions"], 2, "{k:?}: {sum}");
        // The losers left no blob behind.
        assert_eq!(blob_keys(&store).await.len(), 2, "{k:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_auto_versioned_stores_get_consecutive_versions() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let api = api.clone();
                tokio::spawn(async move { api.try_store("qa.Auto", None, &json!({})).await })
            })
            .collect();
        let mut by_version = BTreeMap::new();
        for t in tasks {
            let a = t.await.expect("task");
            let v = a.expect(k, "concurrent auto store", 201);
            let prev = by_version.insert(s(&v["version"]), v.clone());
            assert!(
                prev.is_none(),
                "{k:?}: version {} given twice",
                v["version"]
            );
        }
        let expected: BTreeSet<String> = (0..50).map(|i| format!("1.0.{i}")).collect();
        let got: BTreeSet<String> = by_version.keys().cloned().collect();
        assert_eq!(got, expected, "{k:?}: 50 distinct consecutive versions");
        assert_eq!(api.latest_version("qa.Auto").await, "1.0.49", "{k:?}");
        assert_eq!(
            api.latest("qa.Auto").await["id"],
            by_version["1.0.49"]["id"],
            "{k:?}"
        );
        let entries = api.versions("qa.Auto").await;
        let listed: Vec<String> = entries.iter().map(|e| s(&e["version"])).collect();
        let ordered: Vec<String> = (0..50).map(|i| format!("1.0.{i}")).collect();
        assert_eq!(listed, ordered, "{k:?}: listing in order");
        for e in &entries {
            assert_eq!(e["id"], by_version[&s(&e["version"])]["id"], "{k:?}: {e}");
        }
        let sum = api.signature_summary("default", "qa.Auto").await.unwrap();
        assert_eq!(sum["versions"], 50, "{k:?}: {sum}");
        assert_eq!(sum["latest_version"], "1.0.49", "{k:?}: {sum}");
        // Each stored version records the latest it was stored after.
        let a = api.c.get("/signatures/qa.Auto/versions/1.0.49").await;
        assert_eq!(a.expect(k, "1.0.49", 200)["previous_version"], "1.0.48");
        assert_eq!(blob_keys(&store).await.len(), 50, "{k:?}: no orphan blobs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_alias_compare_and_set_has_one_winner() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        for _ in 0..21 {
            api.store("qa.Cas", None, json!({})).await;
        }
        let a = api
            .put_alias("qa.Cas", "prod", json!({"version": "1.0.0"}))
            .await;
        a.expect(k, "alias prod", 200);
        let tasks: Vec<_> = (1..=20)
            .map(|i| {
                let api = api.clone();
                tokio::spawn(async move {
                    let version = format!("1.0.{i}");
                    let a = api
                        .put_alias(
                            "qa.Cas",
                            "prod",
                            json!({"version": version, "expected_version": "1.0.0"}),
                        )
                        .await;
                    (version, a)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut conflicts = 0;
        for t in tasks {
            let (version, a) = t.await.expect("task");
            match a.status.as_u16() {
                200 => winners.push(version),
                409 => {
                    a.assert_error(409, "conflict");
                    conflicts += 1;
                }
                other => panic!(
                    "{k:?}: unexpected {other}: {}",
                    String::from_utf8_lossy(&a.body)
                ),
            }
        }
        assert_eq!(winners.len(), 1, "{k:?}: exactly one CAS wins: {winners:?}");
        assert_eq!(conflicts, 19, "{k:?}");
        assert_eq!(
            api.alias_version("qa.Cas", "prod").await.as_deref(),
            Some(winners[0].as_str()),
            "{k:?}: the alias points at the winner's version"
        );
        let aliased: Vec<(String, Vec<String>)> = api
            .aliases_by_version("qa.Cas")
            .await
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .collect();
        assert_eq!(
            aliased,
            [(winners[0].clone(), vec!["prod".to_owned()])],
            "{k:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_an_alias_move_never_leaves_a_dangling_alias() {
    for store in backends().await {
        let api = Api::new(&store);
        let k = api.k;
        api.store("qa.Dangle", Some("0.1.0"), json!({})).await;
        let mut outcomes = BTreeMap::new();
        for round in 0..8u64 {
            let version = format!("1.0.{round}");
            let stored = api.store("qa.Dangle", Some(&version), json!({})).await;
            let id = s(&stored["id"]);
            let (put, del) = tokio::join!(
                tokio::spawn({
                    let api = api.clone();
                    let version = version.clone();
                    async move {
                        // Staggered so that both orders happen.
                        tokio::time::sleep(Duration::from_millis(3 * (round % 4))).await;
                        api.put_alias("qa.Dangle", "prod", json!({ "version": version }))
                            .await
                    }
                }),
                tokio::spawn({
                    let api = api.clone();
                    let id = id.clone();
                    async move { api.delete(&format!("/programs/{id}")).await }
                }),
            );
            let (put, del) = (put.expect("task"), del.expect("task"));
            let outcome = (put.status.as_u16(), del.status.as_u16());
            *outcomes.entry(outcome).or_insert(0) += 1;
            let program = api.c.get(&format!("/programs/{id}")).await;
            let alias = api.get_alias("qa.Dangle", "prod").await;
            match outcome {
                // The alias moved first: the delete was refused; both stay.
                (200, 409) => {
                    del.assert_error(409, "conflict");
                    program.expect(k, "program kept", 200);
                    assert_eq!(alias.expect(k, "alias", 200)["id"], id, "{k:?}");
                }
                // The delete went first: the alias could not point at the deleted version.
                (404 | 409, 204) => {
                    program.expect_error(k, "program deleted", 404, "not_found");
                    if alias.status.as_u16() == 200 {
                        assert_ne!(alias.json()["id"], id, "{k:?}: dangling alias");
                    }
                }
                other => panic!(
                    "{k:?}: unexpected outcome {other:?}: {} / {}",
                    String::from_utf8_lossy(&put.body),
                    String::from_utf8_lossy(&del.body)
                ),
            }
            // Whatever the alias points at exists, and the listing agrees.
            if let Some(v) = api.alias_version("qa.Dangle", "prod").await {
                let listed = api.aliases_by_version("qa.Dangle").await;
                assert_eq!(listed.get(&v), Some(&vec!["prod".to_owned()]), "{k:?}");
            }
            // Clear for the next round.
            if api.alias_version("qa.Dangle", "prod").await.is_some() {
                let a = api.delete("/signatures/qa.Dangle/aliases/prod").await;
                a.expect(k, "clear alias", 204);
            }
        }
        eprintln!("{k:?}: (PUT alias, DELETE program) outcomes: {outcomes:?}");
    }
}

// ----- the resolve cache -----------------------------------------------------------------------

#[tokio::test]
async fn writes_through_the_same_storage_are_seen_at_once() {
    for store in backends().await {
        assert_eq!(
            store.storage.config().resolve_cache_ttl,
            Duration::from_secs(2),
            "the default resolve TTL"
        );
        let api = Api::new(&store);
        let k = api.k;
        let v1 = api.store("qa.Cache", None, json!({})).await;
        assert_eq!(api.latest("qa.Cache").await["id"], v1["id"], "{k:?}");
        // Cached now; a store invalidates.
        let v2 = api.store("qa.Cache", None, json!({})).await;
        assert_eq!(
            api.latest("qa.Cache").await["id"],
            v2["id"],
            "{k:?}: new latest at once"
        );

        let a = api
            .put_alias("qa.Cache", "prod", json!({"version": "1.0.0"}))
            .await;
        a.expect(k, "alias", 200);
        assert_eq!(
            api.alias_version("qa.Cache", "prod").await.as_deref(),
            Some("1.0.0")
        );
        let a = api
            .put_alias("qa.Cache", "prod", json!({"version": "1.0.1"}))
            .await;
        a.expect(k, "move alias", 200);
        assert_eq!(
            api.alias_version("qa.Cache", "prod").await.as_deref(),
            Some("1.0.1"),
            "{k:?}: moved alias at once"
        );
        let a = api
            .put_alias(
                "qa.Cache",
                "prod",
                json!({"version": "1.0.0", "expected_version": "1.0.1"}),
            )
            .await;
        a.expect(k, "CAS move alias", 200);
        assert_eq!(
            api.alias_version("qa.Cache", "prod").await.as_deref(),
            Some("1.0.0"),
            "{k:?}: CAS-moved alias at once"
        );
        let a = api.delete("/signatures/qa.Cache/aliases/prod").await;
        a.expect(k, "delete alias", 204);
        assert_eq!(api.alias_version("qa.Cache", "prod").await, None, "{k:?}");

        // Rollback and delete of the latest are seen at once too.
        let a = api
            .c
            .post_json(
                "/signatures/qa.Cache/rollback",
                &json!({"to_version": "1.0.0"}),
            )
            .await;
        let rolled = a.expect(k, "rollback", 201);
        assert_eq!(api.latest("qa.Cache").await["id"], rolled["id"], "{k:?}");
        let a = api.delete(&format!("/programs/{}", s(&rolled["id"]))).await;
        a.expect(k, "delete latest", 204);
        assert_eq!(api.latest("qa.Cache").await["id"], v2["id"], "{k:?}");
        // A forced delete of an alias target: the alias is gone at once.
        let a = api
            .put_alias("qa.Cache", "prod", json!({"version": "1.0.1"}))
            .await;
        a.expect(k, "alias again", 200);
        assert_eq!(
            api.alias_version("qa.Cache", "prod").await.as_deref(),
            Some("1.0.1")
        );
        let a = api
            .delete(&format!("/programs/{}?force=true", s(&v2["id"])))
            .await;
        a.expect(k, "forced delete", 204);
        assert_eq!(api.alias_version("qa.Cache", "prod").await, None, "{k:?}");
        assert_eq!(api.latest("qa.Cache").await["id"], v1["id"], "{k:?}");
    }
}

/// The blob pointer a head, a version claim or an alias target carries is a hint: a load sends
/// the blob read with the record read and keeps the blob only when the record names the same
/// blob and checksum. A wrong pointer (another program's blob, a key that does not exist) or none
/// (items written before pointers existed) costs a round trip, never a wrong answer.
#[tokio::test]
async fn blob_pointers_are_hints_never_answers() {
    use dspy_storage_core::backend::{Condition, WriteOp};
    use dspy_storage_core::model::keys;
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: Duration::ZERO,
        ..Default::default()
    };
    for store in backends_with(config).await {
        let api = Api::new(&store);
        let k = api.k;
        let a = api.store("qa.Hint", Some("1.0.0"), json!({})).await;
        let b = api.store("qa.Hint", Some("1.1.0"), json!({})).await;
        (api.put_alias("qa.Hint", "prod", json!({"version": "1.0.0"}))
            .await)
            .expect(k, "alias", 200);
        let mut programs = Vec::new();
        let mut pointers = Vec::new();
        for v in [&a, &b] {
            let id = ProgramId::parse(&s(&v["id"])).unwrap();
            let by_id = api.c.get(&format!("/programs/{id}")).await;
            programs.push(by_id.expect(k, "by id", 200)["program"].clone());
            let r = store.storage.get_record(&OPERATOR, &id).await.unwrap();
            pointers.push(json!({"key": r.blob_key, "sha256": r.blob.sha256}));
        }
        assert_ne!(programs[0], programs[1]);
        let items = store.storage.items();
        let pk = keys::signature_pk(
            &dspy_storage_core::domain::Project::default_project(),
            &dspy_storage_core::domain::Signature::parse("qa.Hint").unwrap(),
        );
        let v100 = keys::version_sk(&dspy_storage_core::domain::Version::parse("1.0.0").unwrap());
        // Rewrites the `data` of an item of the signature's partition.
        let tamper = |sk: String, edit: Box<dyn Fn(&mut Value) + Send>| {
            let (items, pk) = (items.clone(), pk.clone());
            async move {
                let mut item = items.get(&pk, &sk).await.unwrap().expect("item");
                let mut data: Value = serde_json::from_str(item.data().unwrap()).unwrap();
                edit(&mut data);
                item.attrs.insert("data".into(), data.to_string());
                items
                    .transact(vec![WriteOp::put(item, Condition::None)])
                    .await
                    .unwrap();
            }
        };
        let check = |what: &'static str| {
            let api = api.clone();
            let programs = programs.clone();
            async move {
                let latest = api.latest("qa.Hint").await;
                assert_eq!(latest["program"], programs[1], "{k:?} {what}: latest");
                let alias = api.get_alias("qa.Hint", "prod").await;
                let alias = alias.expect(k, what, 200);
                assert_eq!(alias["program"], programs[0], "{k:?} {what}: alias");
                let exact = api.c.get("/signatures/qa.Hint/versions/1.0.0").await;
                let exact = exact.expect(k, what, 200);
                assert_eq!(exact["program"], programs[0], "{k:?} {what}: exact");
                let raw = api.c.get("/signatures/qa.Hint/aliases/prod/program").await;
                raw.expect_status(k, what, 200);
                assert_eq!(
                    serde_json::from_slice::<Value>(&raw.body).unwrap(),
                    programs[0],
                    "{k:?} {what}: alias bytes"
                );
            }
        };
        check("pointers as written").await;
        // Each pointer names the OTHER program's blob.
        let pb = pointers[1].clone();
        let (pa2, pb2) = (pointers[0].clone(), pb.clone());
        tamper(
            keys::HEAD_SK.to_owned(),
            Box::new(move |d| {
                d["latest_blob"] = pa2.clone();
                d["aliases"]["prod"]["blob"] = pb2.clone();
            }),
        )
        .await;
        let pb3 = pb.clone();
        tamper(v100.clone(), Box::new(move |d| d["blob"] = pb3.clone())).await;
        check("pointers naming another program's blob").await;
        // Pointers to nothing.
        let nowhere = json!({"key": "programs/2000/01/01/nowhere.json", "sha256": "0".repeat(64)});
        let n2 = nowhere.clone();
        tamper(
            keys::HEAD_SK.to_owned(),
            Box::new(move |d| {
                d["latest_blob"] = n2.clone();
                d["aliases"]["prod"]["blob"] = n2.clone();
            }),
        )
        .await;
        tamper(v100.clone(), Box::new(move |d| d["blob"] = nowhere.clone())).await;
        check("pointers to no blob").await;
        // No pointers (items written before they existed).
        tamper(
            keys::HEAD_SK.to_owned(),
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("latest_blob");
                d["aliases"]["prod"].as_object_mut().unwrap().remove("blob");
            }),
        )
        .await;
        tamper(
            v100.clone(),
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("blob");
            }),
        )
        .await;
        check("no pointers").await;
        // An alias move writes its pointer again.
        (api.put_alias("qa.Hint", "prod", json!({"version": "1.1.0"}))
            .await)
            .expect(k, "alias moved", 200);
        let head = items.get(&pk, keys::HEAD_SK).await.unwrap().unwrap();
        let data: Value = serde_json::from_str(head.data().unwrap()).unwrap();
        assert_eq!(data["aliases"]["prod"]["blob"], pb, "{k:?}");
        let alias = api.get_alias("qa.Hint", "prod").await;
        assert_eq!(
            alias.expect(k, "moved", 200)["program"],
            programs[1],
            "{k:?}"
        );
    }
}

// ----- request counts (AWS) --------------------------------------------------------------------

fn aws_only(stores: Vec<TestStore>) -> Option<TestStore> {
    let aws = stores.into_iter().find(|s| s.kind == Kind::Aws);
    if aws.is_none() {
        eprintln!("skipping request counts: no AWS endpoint configured");
    }
    aws
}

#[tokio::test]
async fn alias_and_latest_cost_one_more_item_read_than_by_id() {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: Duration::ZERO,
        ..Default::default()
    };
    let Some(store) = aws_only(backends_with(config).await) else {
        return;
    };
    let api = Api::new(&store);
    let k = api.k;
    let counter = store.counter.clone().expect("AWS counter");
    let stored = api.store("qa.Count", Some("1.0.0"), json!({})).await;
    api.store("qa.Count", Some("1.1.0"), json!({})).await;
    (api.put_alias("qa.Count", "prod", json!({"version": "1.0.0"}))
        .await)
        .expect(k, "alias", 200);
    let id = s(&stored["id"]);

    let reads: [(&str, String); 4] = [
        ("by id", format!("/programs/{id}")),
        ("via alias", "/signatures/qa.Count/aliases/prod".to_owned()),
        (
            "via latest",
            "/signatures/qa.Count/versions/latest".to_owned(),
        ),
        (
            "via exact version",
            "/signatures/qa.Count/versions/1.0.0".to_owned(),
        ),
    ];
    for (what, uri) in &reads {
        // Twice: with caches off the second read costs the same.
        for round in 0..2 {
            counter.reset();
            api.c.get(uri).await.expect(k, what, 200);
            let snapshot = counter.snapshot();
            eprintln!("request counts, caches off, {what} (read {round}): {snapshot:?}");
            let item_reads = if *what == "by id" { 1 } else { 2 };
            assert_eq!(
                counter.count("DynamoDB.GetItem"),
                item_reads,
                "{what}: {snapshot:?}"
            );
            assert_eq!(counter.count("S3.GetObject"), 1, "{what}: {snapshot:?}");
            assert_eq!(
                counter.total(),
                item_reads + 1,
                "{what}: nothing else: {snapshot:?}"
            );
            // The record and the blob are read together: two round trips whatever the way.
            assert_eq!(counter.round_trips(), 2, "{what}: {snapshot:?}");
        }
    }
}

#[tokio::test]
async fn a_cached_alias_read_costs_one_item_read_and_no_blob_read() {
    let Some(store) = aws_only(backends().await) else {
        return;
    };
    let api = Api::new(&store);
    let k = api.k;
    let counter = store.counter.clone().expect("AWS counter");
    api.store("qa.Warm", Some("1.0.0"), json!({})).await;
    (api.put_alias("qa.Warm", "prod", json!({"version": "1.0.0"}))
        .await)
        .expect(k, "alias", 200);
    counter.reset();
    api.get_alias("qa.Warm", "prod")
        .await
        .expect(k, "first alias read", 200);
    let first = counter.snapshot();
    eprintln!("request counts, caches on, first alias read: {first:?}");
    assert_eq!(counter.count("DynamoDB.GetItem"), 2, "{first:?}");
    assert_eq!(counter.count("S3.GetObject"), 1, "{first:?}");

    counter.reset();
    let a = api.get_alias("qa.Warm", "prod").await;
    a.expect(k, "second alias read", 200);
    let second = counter.snapshot();
    eprintln!("request counts, caches on, second alias read: {second:?}");
    assert_eq!(counter.count("DynamoDB.GetItem"), 1, "{second:?}");
    assert_eq!(counter.count("S3.GetObject"), 0, "{second:?}");
    assert_eq!(counter.total(), 1, "{second:?}");
    // The cached answer is still the right program.
    assert_eq!(a.json()["version"], "1.0.0");
}
