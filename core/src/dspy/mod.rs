//! Reading DSPy programs: pure functions over a program's JSON.
//!
//! Two shapes are recognised:
//!
//! * **DSPy** (Python) state files, as `module.save("x.json")` writes them: an object whose values
//!   are the states of the program's predictors (keyed by their path, e.g. `react` or
//!   `extract.predict`), each with `demos`, `signature{instructions, fields[{prefix,
//!   description}]}`, `lm`, ...; plus a `metadata` key. A lone `dspy.Predict` saves its own state
//!   at the top level: it is read as one predictor named `self`.
//! * **DSPy.rb** programs: a `ProgramStorage` envelope (`program_id`, `saved_at`,
//!   `program_data{class_name, state}`, `optimization_result`, `metadata`), its bare
//!   `program_data`, or a bare `state`. A DSPy.rb state is ONE predictor (the program itself,
//!   named `self`): `signature_class`, `instruction` and, when saved, `few_shot_examples`. The
//!   signature's fields are not part of the state; the envelope's MIPROv2 result lists them under
//!   `optimization_result.proposal_statistics.{input_fields, output_fields}`, and they are read
//!   from there when present.
//!
//! Everything else is "other" JSON: it is diffed as JSON (a list of JSON-pointer changes) and has
//! no predictors.
//!
//! Field names: a DSPy state file records each field's `prefix` and `description` but not its
//! name. The name is taken from the default description `${name}` when the field has one, else
//! from the prefix (`"Next Thought:"` → `next_thought`), else it is `field_<n>`.

mod diff;
mod layout;
mod parse;
mod prompt;

pub use diff::*;
pub use layout::*;
pub use parse::*;
pub use prompt::*;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const REACT: &str = include_str!("../../../tests/fixtures/dspy_react_optimized.json");
    const DSPYRB: &str =
        include_str!("../../../tests/fixtures/dspyrb_chain_of_thought_miprov2.json");

    fn react() -> Value {
        serde_json::from_str(REACT).unwrap()
    }
    fn dspyrb() -> Value {
        serde_json::from_str(DSPYRB).unwrap()
    }

    #[test]
    fn parses_the_dspy_react_state_file() {
        let program = parse_program(&react()).unwrap();
        assert_eq!(program.format, ProgramFormat::Dspy);
        let names: Vec<&str> = program.predictors.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["react", "extract.predict"]);
        let react = &program.predictors[0];
        assert!(react
            .instructions
            .starts_with("Imagine you are a detective"));
        let fields: Vec<&str> = react.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            fields,
            [
                "question",
                "trajectory",
                "next_thought",
                "next_tool_name",
                "next_tool_args"
            ]
        );
        assert_eq!(react.fields[2].prefix.as_deref(), Some("Next Thought:"));
        assert_eq!(react.demos.len(), 2);
        let extract = &program.predictors[1];
        assert_eq!(extract.fields[2].name, "reasoning");
        assert_eq!(
            extract.fields[2].prefix.as_deref(),
            Some("Reasoning: Let's think step by step in order to")
        );
        assert_eq!(extract.demos.len(), 2);
        // `metadata` is not a predictor.
        assert_eq!(parse_predictors(&self::react()).unwrap().len(), 2);
    }

    #[test]
    fn parses_the_dspy_rb_envelope() {
        let program = parse_program(&dspyrb()).unwrap();
        assert_eq!(program.format, ProgramFormat::DspyRb);
        assert_eq!(program.class_name.as_deref(), Some("DSPy::ChainOfThought"));
        assert_eq!(program.predictors.len(), 1);
        let p = &program.predictors[0];
        assert_eq!(p.name, "self");
        assert_eq!(p.signature.as_deref(), Some("ManageExtractionConversation"));
        assert!(p
            .instructions
            .starts_with("For the given conversation history and target schema"));
        assert!(p.fields_known);
        let fields: Vec<(&str, &str)> = p
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.role.as_deref().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                ("conversation_history", "input"),
                ("target_schema", "input"),
                ("personality", "input"),
                ("intent_changed", "output"),
                ("extraction_ready", "output"),
                ("next_question", "output"),
                ("missing_fields", "output"),
                ("reasoning", "output"),
            ]
        );
        assert!(p.demos.is_empty());

        // Its program_data alone, and its bare state, are DSPy.rb programs too.
        let v = dspyrb();
        let pd = parse_program(&v["program_data"]).unwrap();
        assert_eq!(pd.format, ProgramFormat::DspyRb);
        assert_eq!(pd.predictors[0].instructions, p.instructions);
        assert!(!pd.predictors[0].fields_known);
        let state = parse_program(&v["program_data"]["state"]).unwrap();
        assert_eq!(state.class_name, None);
        assert_eq!(state.predictors[0].signature, p.signature);
    }

    #[test]
    fn other_json_is_not_dspy() {
        assert!(parse_predictors(&json!({"a": 1, "metadata": {}})).is_none());
        assert!(parse_predictors(&json!([1, 2])).is_none());
        assert!(parse_predictors(&json!({"signature_class": "X", "other": 1})).is_none());
        let single = json!({"demos": [], "signature": {"instructions": "Do it.", "fields": []}});
        assert_eq!(parse_predictors(&single).unwrap()[0].name, "self");
    }

    #[test]
    fn field_names_come_from_descriptions_then_prefixes() {
        assert_eq!(field_name(Some("Answer:"), Some("${answer}"), 0), "answer");
        assert_eq!(
            field_name(Some("Next Tool Args:"), Some("JSON args"), 0),
            "next_tool_args"
        );
        assert_eq!(field_name(None, None, 2), "field_3");
    }

    fn program(instructions: &str, fields: &[&str], demos: Vec<Value>) -> Value {
        let fields: Vec<Value> = fields
            .iter()
            .map(|f| json!({"prefix": format!("{f}:"), "description": format!("${{{f}}}")}))
            .collect();
        json!({
            "predict": {
                "traces": [], "train": [], "demos": demos,
                "signature": {"instructions": instructions, "fields": fields},
                "lm": null
            },
            "metadata": {"dependency_versions": {"dspy": "3.0.0"}}
        })
    }

    #[test]
    fn changed_instructions_give_a_unified_diff() {
        let a = program(
            "Answer the question.\nBe brief.",
            &["question", "answer"],
            vec![],
        );
        let b = program(
            "Answer the question.\nBe thorough.",
            &["question", "answer"],
            vec![],
        );
        let d = diff(&a, &b);
        assert_eq!(d.kind, DiffKind::Dspy);
        assert!(!d.identical);
        let p = &d.predictors.as_ref().unwrap()[0];
        assert_eq!(p.status, PredictorStatus::Changed);
        let text = p.instructions_diff.as_deref().unwrap();
        assert!(
            text.starts_with("--- A/predict\n+++ B/predict\n@@"),
            "{text}"
        );
        assert!(text.contains("\n Answer the question.\n"), "{text}");
        assert!(text.contains("\n-Be brief.\n"), "{text}");
        assert!(text.contains("\n+Be thorough.\n"), "{text}");
        assert!(p.demos.is_empty() && p.fields.is_empty());
        assert!(d.changes.is_empty(), "{:?}", d.changes);
    }

    #[test]
    fn demos_added_and_removed() {
        let d1 = json!({"question": "1+1?", "answer": "2"});
        let d2 = json!({"question": "2+2?", "answer": "4"});
        let d3 = json!({"answer": "6", "question": "3+3?"});
        let a = program("Q.", &["question", "answer"], vec![d1.clone(), d2.clone()]);
        let b = program("Q.", &["question", "answer"], vec![d2.clone(), d3.clone()]);
        let d = diff(&a, &b);
        let p = &d.predictors.unwrap()[0];
        assert_eq!(p.instructions_diff, None);
        assert_eq!(p.demos.removed, [IndexedDemo { index: 0, demo: d1 }]);
        assert_eq!(p.demos.added, [IndexedDemo { index: 1, demo: d3 }]);
        // Key order does not make a demo different.
        let reordered = json!({"answer": "4", "question": "2+2?"});
        let c = program("Q.", &["question", "answer"], vec![reordered]);
        let b2 = program("Q.", &["question", "answer"], vec![d2]);
        let p = &diff(&b2, &c).predictors.unwrap()[0];
        assert_eq!(p.status, PredictorStatus::Unchanged);
    }

    #[test]
    fn fields_and_predictors_added_removed_changed() {
        let a = program("Q.", &["question", "answer"], vec![]);
        let b = program("Q.", &["question", "final_answer"], vec![]);
        let d = diff(&a, &b);
        let p = &d.predictors.unwrap()[0];
        assert_eq!(p.fields.removed[0].name, "answer");
        assert_eq!(p.fields.added[0].name, "final_answer");
        assert!(!p.fields.reordered);

        let mut c = a.clone();
        c["predict"]["signature"]["fields"][1]["prefix"] = json!("Final Answer:");
        let p = &diff(&a, &c).predictors.unwrap()[0];
        assert_eq!(p.fields.changed.len(), 1);
        assert_eq!(
            p.fields.changed[0].to.prefix.as_deref(),
            Some("Final Answer:")
        );

        let mut e = a.clone();
        e["extra"] = a["predict"].clone();
        e.as_object_mut().unwrap().remove("predict");
        let d = diff(&a, &e);
        let ps = d.predictors.unwrap();
        assert_eq!(ps[0].name, "predict");
        assert_eq!(ps[0].status, PredictorStatus::Removed);
        assert_eq!(ps[1].name, "extra");
        assert_eq!(ps[1].status, PredictorStatus::Added);
        assert!(ps[1]
            .instructions_diff
            .as_deref()
            .unwrap()
            .contains("\n+Q.\n"));
        assert_eq!(ps[1].fields.added.len(), 2);
    }

    #[test]
    fn the_real_programs_diff_against_edited_copies() {
        let a = react();
        let mut b = a.clone();
        b["react"]["signature"]["instructions"] = json!("Find the studio.");
        b["extract.predict"]["demos"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        b["metadata"]["dependency_versions"]["dspy"] = json!("3.0.1");
        let d = diff(&a, &b);
        assert_eq!(d.kind, DiffKind::Dspy);
        let ps = d.predictors.unwrap();
        assert!(ps[0]
            .instructions_diff
            .as_deref()
            .unwrap()
            .contains("\n+Find the studio.\n"));
        assert!(ps[0].demos.is_empty());
        assert_eq!(ps[1].status, PredictorStatus::Changed);
        assert_eq!(ps[1].demos.removed.len(), 1);
        assert_eq!(ps[1].demos.removed[0].index, 1);
        assert_eq!(
            d.changes,
            [PointerChange {
                op: PointerOp::Replace,
                path: "/metadata/dependency_versions/dspy".into(),
                from: Some(json!("3.0.0")),
                value: Some(json!("3.0.1")),
            }]
        );
        let same = diff(&a, &a);
        assert!(same.identical);
        assert!(same
            .predictors
            .unwrap()
            .iter()
            .all(|p| p.status == PredictorStatus::Unchanged));

        let r = dspyrb();
        let mut s = r.clone();
        s["program_data"]["state"]["instruction"] = json!("Ask one question at a time.");
        s["saved_at"] = json!("2025-08-19T00:00:00+00:00");
        let d = diff(&r, &s);
        assert_eq!(d.format, Some(ProgramFormat::DspyRb));
        let p = &d.predictors.unwrap()[0];
        assert!(p
            .instructions_diff
            .as_deref()
            .unwrap()
            .contains("\n+Ask one question at a time.\n"));
        assert_eq!(d.changes.len(), 1);
        assert_eq!(d.changes[0].path, "/saved_at");

        // A DSPy file against a DSPy.rb one: compared as JSON.
        assert_eq!(diff(&a, &r).kind, DiffKind::Json);
    }

    #[test]
    fn json_pointer_diff_of_generic_json() {
        let a = json!({"a/b": 1, "m~n": {"x": [1, 2, 3]}, "gone": true, "same": "s"});
        let b = json!({"a/b": 2, "m~n": {"x": [1, 3, 4]}, "same": "s", "new": null});
        let changes = json_pointer_diff(&a, &b);
        let got: Vec<Value> = changes
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                json!({"op": "replace", "path": "/a~1b", "from": 1, "value": 2}),
                json!({"op": "remove", "path": "/m~0n/x/1", "from": 2}),
                json!({"op": "add", "path": "/m~0n/x/2", "value": 4}),
                json!({"op": "remove", "path": "/gone", "from": true}),
                json!({"op": "add", "path": "/new", "value": null}),
            ]
        );
        let d = diff(&a, &b);
        assert_eq!(d.kind, DiffKind::Json);
        assert!(d.predictors.is_none());
        let v = serde_json::to_value(&d).unwrap();
        assert!(v.get("predictors").is_none());
        // A change of type at the root, and no change at all.
        assert_eq!(json_pointer_diff(&json!([1]), &json!({"a": 1}))[0].path, "");
        assert!(json_pointer_diff(&a, &a).is_empty());
        // Arrays of objects replaced in place are compared pairwise.
        let c = json_pointer_diff(&json!([{"k": 1, "v": "a"}]), &json!([{"k": 1, "v": "b"}]));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "/0/v");
        assert_eq!(escape_pointer_token("a~/b"), "a~0~1b");
    }

    #[test]
    fn layouts_and_compatibility() {
        let a = program("One.", &["question", "answer"], vec![]);
        let b = program(
            "Two.",
            &["question", "answer"],
            vec![json!({"question": "q"})],
        );
        let la = PredictorLayout::of(&a);
        let lb = PredictorLayout::of(&b);
        assert_eq!(la, lb, "instructions and demos are not layout");
        assert_eq!(la.fingerprint.len(), 64);
        let c = compatibility(Some(&la), Some(&lb));
        assert!(c.compatible);
        assert!(c.differences.is_empty());

        let renamed = program("One.", &["question", "final_answer"], vec![]);
        let lr = PredictorLayout::of(&renamed);
        assert_ne!(la.fingerprint, lr.fingerprint);
        let c = compatibility(Some(&la), Some(&lr));
        assert!(!c.compatible);
        assert_eq!(
            c.differences,
            ["field 2 of `predict`: `answer` vs `final_answer`"]
        );

        let more = program("One.", &["question", "context", "answer"], vec![]);
        let c = compatibility(Some(&la), Some(&PredictorLayout::of(&more)));
        assert!(!c.compatible);
        assert_eq!(
            c.differences,
            [
                "`predict` has 2 fields in A and 3 in B",
                "field 2 of `predict`: `answer` vs `context`",
                "field 3 of `predict` (`answer`) exists only in B",
            ]
        );

        // A changed prefix is state, not layout.
        let mut prefixed = a.clone();
        prefixed["predict"]["signature"]["fields"][1]["prefix"] = json!("Final Answer:");
        let lp = PredictorLayout::of(&prefixed);
        assert_eq!(la.fingerprint, lp.fingerprint);
        assert!(compatibility(Some(&la), Some(&lp)).compatible);

        let react = PredictorLayout::of(&react());
        let c = compatibility(Some(&la), Some(&react));
        assert!(!c.compatible);
        assert!(c
            .differences
            .contains(&"predictor `predict` exists only in A".to_owned()));
        assert!(c
            .differences
            .contains(&"predictor `react` exists only in B".to_owned()));
        assert!(compatibility(Some(&react), Some(&react)).compatible);

        let rb = PredictorLayout::of(&dspyrb());
        assert_eq!(rb.format, ProgramFormat::DspyRb);
        assert!(compatibility(Some(&rb), Some(&rb)).compatible);
        let c = compatibility(Some(&react), Some(&rb));
        assert!(!c.compatible);
        assert_eq!(
            c.differences,
            ["program A is a DSPy (Python) state file, program B is a DSPy.rb program"]
        );
        let mut other_sig = dspyrb();
        other_sig["program_data"]["state"]["signature_class"] = json!("Other");
        let c = compatibility(Some(&rb), Some(&PredictorLayout::of(&other_sig)));
        assert_eq!(
            c.differences,
            ["signature of `self`: `ManageExtractionConversation` vs `Other`"]
        );
        // The envelope records the fields, the bare program_data does not: compatible.
        let bare = PredictorLayout::of(&dspyrb()["program_data"]);
        assert!(compatibility(Some(&rb), Some(&bare)).compatible);

        let other = PredictorLayout::of(&json!({"x": 1}));
        assert!(!other.is_dspy());
        let c = compatibility(Some(&other), Some(&la));
        assert!(!c.compatible);
        assert_eq!(
            c.differences,
            ["program A is not a DSPy program (no predictors)"]
        );
        assert!(!compatibility(Some(&other), Some(&other)).compatible);
        let c = compatibility(None, Some(&la));
        assert!(!c.compatible);
        assert!(c.differences[0].contains("stored before predictor layouts"));

        // Layout from text: parsed only when an object; round-trips through serde.
        assert_eq!(PredictorLayout::of_json_text(REACT), react);
        assert_eq!(
            PredictorLayout::of_json_text("[1]").format,
            ProgramFormat::Other
        );
        let back: PredictorLayout =
            serde_json::from_str(&serde_json::to_string(&react).unwrap()).unwrap();
        assert_eq!(back, react);
    }

    #[test]
    fn renders_prompts_as_markdown() {
        let md = render_prompt(&react());
        assert!(
            md.starts_with("# Program prompts\n\n_DSPy state file · 2 predictors_"),
            "{md}"
        );
        assert!(md.contains("## Predictor `react`\n"));
        assert!(md.contains("## Predictor `extract.predict`\n"));
        assert!(md.contains("Imagine you are a detective racing against time"));
        assert!(
            md.contains("| 3 | next_thought | Next Thought: | ${next_thought} |"),
            "{md}"
        );
        assert!(md.contains("### Demos (2)"));
        assert!(
            md.contains("#### Demo 1\n\n- **augmented**: `true`\n"),
            "{md}"
        );
        assert!(
            md.contains("- **trajectory**:\n\n  ```text\n  [[ ## thought_0 ## ]]\n"),
            "{md}"
        );

        let md = render_prompt_titled(&dspyrb(), "ManageExtractionConversation 1.0.0");
        assert!(md.starts_with("# ManageExtractionConversation 1.0.0\n"));
        assert!(md.contains("DSPy.rb program · `DSPy::ChainOfThought` · 1 predictor"));
        assert!(md.contains("## Predictor `self` — signature `ManageExtractionConversation`"));
        assert!(md.contains("For the given conversation history and target schema"));
        assert!(
            md.contains("| 4 | intent_changed | output | String |  |"),
            "{md}"
        );
        assert!(md.contains("### Demos (0)\n\n_(none)_"));

        let md = render_prompt(&json!({"a": "b"}));
        assert!(md.contains("not a DSPy state file"));
        assert!(md.contains("```json\n{\n  \"a\": \"b\"\n}\n```"), "{md}");

        // Backticks in instructions get a longer fence; pipes in cells are escaped.
        let mut p = program("Use ```code``` here.", &["question"], vec![]);
        p["predict"]["signature"]["fields"][0]["description"] = json!("a | b");
        let md = render_prompt(&p);
        assert!(md.contains("````text\nUse ```code``` here.\n````"), "{md}");
        assert!(
            md.contains("| 1 | question | question: | a \\| b |"),
            "{md}"
        );
    }
}
