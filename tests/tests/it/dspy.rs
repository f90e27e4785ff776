//! HTTP tests of reading DSPy programs: `GET /signatures/{signature}/diff`,
//! `GET /programs/{id}/prompt` and `GET /programs/{id}/compatibility`, on every backend of
//! `backends()`, with the real saved programs. Every failure names the backend.

use dspy_storage_tests::{backends, shared_program, Client, Kind};
use serde_json::{json, Value};

const REACT: &str = "dspy_react_optimized.json";
const DSPYRB: &str = "dspyrb_chain_of_thought_miprov2.json";

/// Stores a program given as JSON text (spliced in verbatim) and returns its id.
async fn store(c: &Client, k: Kind, program: &str, signature: &str, version: &str) -> String {
    let metadata = json!({"signature": signature, "version": version});
    let body = format!(r#"{{"program": {program}, "metadata": {metadata}}}"#);
    let a = c.post_raw("/programs", body).await;
    a.expect_status(k, &format!("store {signature} {version}"), 201);
    a.json()["id"].as_str().expect("id").to_owned()
}

fn react() -> Value {
    serde_json::from_str(&shared_program(REACT)).unwrap()
}

const NEW_INSTRUCTIONS: &str = "Find which studio produced both films, using Wikipedia.";

/// The ReAct program re-optimized: new `react` instructions, the second demo of
/// `extract.predict` dropped.
fn react_v2() -> Value {
    let mut v = react();
    v["react"]["signature"]["instructions"] = json!(NEW_INSTRUCTIONS);
    v["extract.predict"]["demos"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    v
}

/// The ReAct program for a signature whose last `react` field was renamed.
fn react_renamed_field() -> Value {
    let mut v = react();
    v["react"]["signature"]["fields"][4] =
        json!({"prefix": "Tool Arguments:", "description": "${tool_arguments}"});
    v
}

fn predictor<'a>(diff: &'a Value, name: &str) -> &'a Value {
    diff["predictors"]
        .as_array()
        .expect("predictors")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no predictor {name} in {diff}"))
}

#[tokio::test]
async fn diff_shows_changed_instructions_and_removed_demos() {
    for s in backends().await {
        let (k, c) = (s.kind, s.client());
        let original = react();
        let v1 = store(&c, k, &shared_program(REACT), "ReActQA", "1.0.0").await;
        let v2 = store(&c, k, &react_v2().to_string(), "ReActQA", "1.1.0").await;

        let a = c.get("/signatures/ReActQA/diff?from=1.0.0&to=latest").await;
        a.expect_status(k, "diff", 200);
        let d = a.json();
        assert_eq!(d["kind"], "dspy", "{k:?}: {d}");
        assert_eq!(d["format"], "dspy", "{k:?}");
        assert_eq!(d["identical"], false, "{k:?}");
        assert_eq!(d["signature"], "ReActQA", "{k:?}");
        assert_eq!(d["from"], json!({"id": v1, "version": "1.0.0"}), "{k:?}");
        assert_eq!(d["to"], json!({"id": v2, "version": "1.1.0"}), "{k:?}");

        let r = predictor(&d, "react");
        assert_eq!(r["status"], "changed", "{k:?}");
        let text = r["instructions_diff"].as_str().expect("instructions_diff");
        assert!(
            text.starts_with("--- 1.0.0/react\n+++ 1.1.0/react\n@@ "),
            "{k:?}: {text}"
        );
        assert!(
            text.contains("\n-Imagine you are a detective racing against time"),
            "{k:?}: {text}"
        );
        assert!(
            text.contains(&format!("\n+{NEW_INSTRUCTIONS}\n")),
            "{k:?}: {text}"
        );
        assert!(r.get("demos").is_none(), "{k:?}: {r}");
        assert!(r.get("fields").is_none(), "{k:?}: {r}");

        let e = predictor(&d, "extract.predict");
        assert_eq!(e["status"], "changed", "{k:?}");
        assert!(e.get("instructions_diff").is_none(), "{k:?}: {e}");
        assert_eq!(e["demos"]["added"], json!([]), "{k:?}");
        assert_eq!(
            e["demos"]["removed"],
            json!([{"index": 1, "demo": original["extract.predict"]["demos"][1]}]),
            "{k:?}"
        );
        assert_eq!(d["changes"], json!([]), "{k:?}: {d}");

        // The other way round: the demo comes back.
        let back = c.get("/signatures/ReActQA/diff?from=latest&to=1.0.0").await;
        back.expect_status(k, "reverse diff", 200);
        let back = back.json();
        assert_eq!(
            predictor(&back, "extract.predict")["demos"]["added"][0]["index"],
            1,
            "{k:?}"
        );

        // A version against itself.
        let same = c.get("/signatures/ReActQA/diff?from=1.1.0&to=1.1.0").await;
        same.expect_status(k, "self diff", 200);
        let same = same.json();
        assert_eq!(same["identical"], true, "{k:?}");
        assert!(same["predictors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "unchanged"));
    }
}

#[tokio::test]
async fn diff_of_other_json_is_a_json_pointer_list() {
    for s in backends().await {
        let (k, c) = (s.kind, s.client());
        store(
            &c,
            k,
            r#"{"a/b": 1, "m~n": [1, 2], "keep": true}"#,
            "Plain",
            "1.0.0",
        )
        .await;
        store(
            &c,
            k,
            r#"{"a/b": 2, "m~n": [1], "keep": true, "new": null}"#,
            "Plain",
            "1.0.1",
        )
        .await;
        let a = c.get("/signatures/Plain/diff?from=1.0.0&to=1.0.1").await;
        a.expect_status(k, "json diff", 200);
        let d = a.json();
        assert_eq!(d["kind"], "json", "{k:?}: {d}");
        assert!(d.get("predictors").is_none(), "{k:?}: {d}");
        assert_eq!(
            d["changes"],
            json!([
                {"op": "replace", "path": "/a~1b", "from": 1, "value": 2},
                {"op": "remove", "path": "/m~0n/1", "from": 2},
                {"op": "add", "path": "/new", "value": null},
            ]),
            "{k:?}"
        );
    }
}

#[tokio::test]
async fn diff_errors() {
    for s in backends().await {
        let (k, c) = (s.kind, s.client());
        store(&c, k, &shared_program(REACT), "ReActQA", "1.0.0").await;
        for (uri, field) in [
            ("/signatures/ReActQA/diff?to=1.0.0", "from"),
            ("/signatures/ReActQA/diff?from=1.0.0", "to"),
            ("/signatures/ReActQA/diff?from=1.x&to=1.0.0", "from"),
            ("/signatures/ReActQA/diff?from=1.0.0&to=newest", "to"),
        ] {
            let e = c
                .get(uri)
                .await
                .expect_error(k, uri, 400, "invalid_request");
            assert_eq!(e["error"]["field"], field, "{k:?}: {uri}: {e}");
        }
        for uri in [
            "/signatures/ReActQA/diff?from=1.0.0&to=2.0.0",
            "/signatures/Nope/diff?from=latest&to=latest",
            "/signatures/ReActQA/diff?from=1.0.0&to=latest&project=elsewhere",
        ] {
            c.get(uri).await.expect_error(k, uri, 404, "not_found");
        }
    }
}

#[tokio::test]
async fn prompt_renders_both_real_programs() {
    for s in backends().await {
        let (k, c) = (s.kind, s.client());
        let react_id = store(&c, k, &shared_program(REACT), "ReActQA", "1.0.0").await;
        let rb_id = store(&c, k, &shared_program(DSPYRB), "ManageExtraction", "2.0.0").await;

        let a = c.get(&format!("/programs/{react_id}/prompt")).await;
        a.expect_status(k, "react prompt", 200);
        assert_eq!(
            a.headers["content-type"], "text/markdown; charset=utf-8",
            "{k:?}"
        );
        let md = String::from_utf8(a.body.to_vec()).unwrap();
        assert!(md.starts_with("# ReActQA 1.0.0"), "{k:?}: {md}");
        for want in [
            "## Predictor `react`",
            "## Predictor `extract.predict`",
            "Imagine you are a detective racing against time",
            "Given the very verbose fields `question`, produce the fields `answer`.",
            "| 3 | reasoning | Reasoning: Let's think step by step in order to | ${reasoning} |",
            "### Demos (2)",
            "- **question**: Are Smyrnium and Nymania both types of plant?",
        ] {
            assert!(md.contains(want), "{k:?}: no {want:?} in\n{md}");
        }

        let a = c.get(&format!("/programs/{rb_id}/prompt")).await;
        a.expect_status(k, "DSPy.rb prompt", 200);
        let md = String::from_utf8(a.body.to_vec()).unwrap();
        for want in [
            "# ManageExtraction 2.0.0",
            "DSPy.rb program · `DSPy::ChainOfThought`",
            "signature `ManageExtractionConversation`",
            "For the given conversation history and target schema, determine if the user's intent has changed.",
            "| 1 | conversation_history | input | String |",
        ] {
            assert!(md.contains(want), "{k:?}: no {want:?} in\n{md}");
        }

        let plain = store(&c, k, r#"{"hello": "world"}"#, "Plain", "1.0.0").await;
        let a = c.get(&format!("/programs/{plain}/prompt")).await;
        a.expect_status(k, "plain prompt", 200);
        assert!(String::from_utf8_lossy(&a.body).contains("\"hello\": \"world\""));

        let unknown = uuid::Uuid::now_v7();
        for uri in [
            format!("/programs/{unknown}/prompt"),
            "/programs/not-an-id/prompt".to_owned(),
        ] {
            c.get(&uri).await.expect_error(k, &uri, 404, "not_found");
        }
    }
}

#[tokio::test]
async fn compatibility_of_versions_and_renamed_fields() {
    for s in backends().await {
        let (k, c) = (s.kind, s.client());
        let v1 = store(&c, k, &shared_program(REACT), "ReActQA", "1.0.0").await;
        let v2 = store(&c, k, &react_v2().to_string(), "ReActQA", "1.1.0").await;
        let renamed = store(
            &c,
            k,
            &react_renamed_field().to_string(),
            "ReActQA",
            "2.0.0",
        )
        .await;
        let rb = store(&c, k, &shared_program(DSPYRB), "ManageExtraction", "1.0.0").await;

        let a = c
            .get(&format!("/programs/{v1}/compatibility?with={v2}"))
            .await;
        a.expect_status(k, "v1 with v2", 200);
        assert_eq!(
            a.json(),
            json!({"id": v1, "with": v2, "compatible": true, "differences": []}),
            "{k:?}"
        );

        let a = c
            .get(&format!("/programs/{v2}/compatibility?with={renamed}"))
            .await;
        a.expect_status(k, "v2 with renamed", 200);
        let v = a.json();
        assert_eq!(v["compatible"], false, "{k:?}: {v}");
        assert_eq!(
            v["differences"],
            json!(["field 5 of `react`: `next_tool_args` vs `tool_arguments`"]),
            "{k:?}"
        );

        let a = c
            .get(&format!("/programs/{v1}/compatibility?with={rb}"))
            .await;
        a.expect_status(k, "react with DSPy.rb", 200);
        let v = a.json();
        assert_eq!(v["compatible"], false, "{k:?}: {v}");
        assert_eq!(
            v["differences"],
            json!(["program A is a DSPy (Python) state file, program B is a DSPy.rb program"]),
            "{k:?}"
        );

        let a = c
            .get(&format!("/programs/{rb}/compatibility?with={rb}"))
            .await;
        a.expect_status(k, "DSPy.rb with itself", 200);
        assert_eq!(a.json()["compatible"], true, "{k:?}");

        // A rollback repeats the program, and its layout.
        let a = c
            .post_json(
                "/signatures/ReActQA/rollback",
                &json!({"to_version": "1.0.0"}),
            )
            .await;
        a.expect_status(k, "rollback", 201);
        let rolled = a.json()["id"].as_str().unwrap().to_owned();
        let a = c
            .get(&format!("/programs/{rolled}/compatibility?with={v1}"))
            .await;
        a.expect_status(k, "rollback with v1", 200);
        assert_eq!(a.json()["compatible"], true, "{k:?}");

        // Errors: `with` missing or malformed (400), unknown programs (404).
        for uri in [
            format!("/programs/{v1}/compatibility"),
            format!("/programs/{v1}/compatibility?with=nope"),
        ] {
            let e = c
                .get(&uri)
                .await
                .expect_error(k, &uri, 400, "invalid_request");
            assert_eq!(e["error"]["field"], "with", "{k:?}: {e}");
        }
        let unknown = uuid::Uuid::now_v7();
        for uri in [
            format!("/programs/{v1}/compatibility?with={unknown}"),
            format!("/programs/{unknown}/compatibility?with={v1}"),
            format!("/programs/not-an-id/compatibility?with={v1}"),
        ] {
            c.get(&uri).await.expect_error(k, &uri, 404, "not_found");
        }
    }
}
