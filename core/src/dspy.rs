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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What kind of program a JSON value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramFormat {
    /// A DSPy (Python) state file.
    Dspy,
    /// A DSPy.rb program: a ProgramStorage envelope, its `program_data`, or a bare state.
    DspyRb,
    /// Any other JSON.
    Other,
}

impl ProgramFormat {
    fn describe(self) -> &'static str {
        match self {
            ProgramFormat::Dspy => "a DSPy (Python) state file",
            ProgramFormat::DspyRb => "a DSPy.rb program",
            ProgramFormat::Other => "not a DSPy program",
        }
    }
}

/// One field of a predictor's signature, in signature order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// DSPy.rb: the field's (Sorbet) type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// DSPy.rb: `input` or `output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// One predictor of a program: its instructions, fields and demos.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Predictor {
    /// The predictor's path (`react`, `extract.predict`), or `self` for a one-predictor program.
    pub name: String,
    /// DSPy.rb: the signature class the state belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub instructions: String,
    pub fields: Vec<Field>,
    /// False when the program does not record the fields (a DSPy.rb program saved without an
    /// optimization result that lists them): `fields` is then empty.
    pub fields_known: bool,
    pub demos: Vec<Value>,
}

/// A program read as DSPy: its format, its class (DSPy.rb) and its predictors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DspyProgram {
    pub format: ProgramFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    pub predictors: Vec<Predictor>,
}

/// The predictors of a DSPy state file or a DSPy.rb program; `None` for any other JSON.
pub fn parse_predictors(value: &Value) -> Option<Vec<Predictor>> {
    parse_program(value).map(|p| p.predictors)
}

/// Reads a program as DSPy; `None` for any other JSON.
pub fn parse_program(value: &Value) -> Option<DspyProgram> {
    let obj = value.as_object()?;
    if let Some(p) = parse_dspy_rb(obj) {
        return Some(p);
    }
    if is_predictor_state(value) {
        return Some(DspyProgram {
            format: ProgramFormat::Dspy,
            class_name: None,
            predictors: vec![dspy_predictor("self", obj)],
        });
    }
    let predictors: Vec<Predictor> = obj
        .iter()
        .filter(|(k, v)| k.as_str() != "metadata" && is_predictor_state(v))
        .filter_map(|(k, v)| Some(dspy_predictor(k, v.as_object()?)))
        .collect();
    if predictors.is_empty() {
        return None;
    }
    Some(DspyProgram {
        format: ProgramFormat::Dspy,
        class_name: None,
        predictors,
    })
}

/// A DSPy predictor's state: `signature` (an object) and `demos` (an array).
fn is_predictor_state(v: &Value) -> bool {
    v.get("signature").is_some_and(Value::is_object) && v.get("demos").is_some_and(Value::is_array)
}

fn dspy_predictor(name: &str, state: &Map<String, Value>) -> Predictor {
    let signature = state.get("signature");
    let instructions = signature
        .and_then(|s| s.get("instructions"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let fields = signature
        .and_then(|s| s.get("fields"))
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let prefix = f.get("prefix").and_then(Value::as_str).map(str::to_owned);
                    let description = f
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    Field {
                        name: field_name(prefix.as_deref(), description.as_deref(), i),
                        prefix,
                        description,
                        ty: None,
                        role: None,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let demos = state
        .get("demos")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Predictor {
        name: name.to_owned(),
        signature: None,
        instructions,
        fields,
        fields_known: true,
        demos,
    }
}

/// A DSPy field's name: from the default description `${name}`, else from the prefix.
fn field_name(prefix: Option<&str>, description: Option<&str>, index: usize) -> String {
    if let Some(inner) = description
        .and_then(|d| d.strip_prefix("${"))
        .and_then(|d| d.strip_suffix('}'))
    {
        if !inner.is_empty() && inner.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return inner.to_owned();
        }
    }
    if let Some(head) = prefix.and_then(|p| p.split(':').next()) {
        let mut name = String::new();
        for word in head
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            if !name.is_empty() {
                name.push('_');
            }
            name.push_str(&word.to_lowercase());
        }
        if !name.is_empty() {
            return name;
        }
    }
    format!("field_{}", index + 1)
}

fn parse_dspy_rb(obj: &Map<String, Value>) -> Option<DspyProgram> {
    // The envelope, its program_data, or a bare state.
    let (program_data, envelope) = match obj.get("program_data") {
        Some(Value::Object(pd)) => (pd, Some(obj)),
        _ => (obj, None),
    };
    let (class_name, state) = match (program_data.get("class_name"), program_data.get("state")) {
        (Some(Value::String(c)), Some(Value::Object(s))) => (Some(c.clone()), s),
        _ if envelope.is_none() && is_dspy_rb_state(obj) => (None, obj),
        _ => return None,
    };
    if !state.contains_key("signature_class") && !state.contains_key("instruction") {
        return None;
    }
    let stats = envelope
        .and_then(|e| e.get("optimization_result"))
        .and_then(|r| r.get("proposal_statistics"));
    let mut fields = Vec::new();
    let mut fields_known = false;
    for (key, role) in [("input_fields", "input"), ("output_fields", "output")] {
        if let Some(list) = stats.and_then(|s| s.get(key)).and_then(Value::as_array) {
            fields_known = true;
            fields.extend(list.iter().enumerate().map(|(i, f)| {
                let text = |k: &str| {
                    f.get(k)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                Field {
                    name: text("name").unwrap_or_else(|| format!("{role}_{}", i + 1)),
                    prefix: None,
                    description: text("description"),
                    ty: text("type"),
                    role: Some(role.to_owned()),
                }
            }));
        }
    }
    let predictor = Predictor {
        name: "self".to_owned(),
        signature: state
            .get("signature_class")
            .and_then(Value::as_str)
            .map(str::to_owned),
        instructions: state
            .get("instruction")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        fields,
        fields_known,
        demos: state
            .get("few_shot_examples")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    Some(DspyProgram {
        format: ProgramFormat::DspyRb,
        class_name,
        predictors: vec![predictor],
    })
}

/// A bare DSPy.rb state: `signature_class` with `instruction` and/or `few_shot_examples`, and no
/// other keys.
fn is_dspy_rb_state(obj: &Map<String, Value>) -> bool {
    obj.get("signature_class").is_some_and(Value::is_string)
        && (obj.contains_key("instruction") || obj.contains_key("few_shot_examples"))
        && obj.keys().all(|k| {
            matches!(
                k.as_str(),
                "signature_class" | "instruction" | "few_shot_examples"
            )
        })
}

// ----- layout and compatibility ---------------------------------------------------------------

/// A field in a predictor layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldShape {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A predictor in a layout: its name, signature class (DSPy.rb) and ordered fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictorShape {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// `None` when the program does not record its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldShape>>,
}

/// The shape of a program that must match for one program's state to be loaded into the other:
/// kept with each stored program.
///
/// The `fingerprint` is the hex SHA-256 of the canonical form of what compatibility compares: the
/// format, the DSPy.rb class, and per predictor (sorted by name) its name, signature class and
/// ordered field names. Prefixes are listed but not fingerprinted: they are state an optimizer
/// may rewrite, and loading replaces them. Equal fingerprints mean compatible programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictorLayout {
    pub format: ProgramFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(default)]
    pub predictors: Vec<PredictorShape>,
    pub fingerprint: String,
}

impl PredictorLayout {
    /// The layout of a program's JSON (an `other` layout with no predictors for non-DSPy JSON).
    pub fn of(value: &Value) -> PredictorLayout {
        match parse_program(value) {
            Some(p) => Self::of_program(&p),
            None => Self::build(ProgramFormat::Other, None, Vec::new()),
        }
    }

    /// The layout of a program given as JSON text; the text is parsed only when it is an object.
    pub fn of_json_text(text: &str) -> PredictorLayout {
        if text.trim_start().starts_with('{') {
            if let Ok(value) = serde_json::from_str::<Value>(text) {
                return Self::of(&value);
            }
        }
        Self::build(ProgramFormat::Other, None, Vec::new())
    }

    pub fn of_program(program: &DspyProgram) -> PredictorLayout {
        let predictors = program
            .predictors
            .iter()
            .map(|p| PredictorShape {
                name: p.name.clone(),
                signature: p.signature.clone(),
                fields: p.fields_known.then(|| {
                    p.fields
                        .iter()
                        .map(|f| FieldShape {
                            name: f.name.clone(),
                            prefix: f.prefix.clone(),
                        })
                        .collect()
                }),
            })
            .collect();
        Self::build(program.format, program.class_name.clone(), predictors)
    }

    fn build(
        format: ProgramFormat,
        class_name: Option<String>,
        predictors: Vec<PredictorShape>,
    ) -> PredictorLayout {
        let mut sorted: Vec<&PredictorShape> = predictors.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let canonical = serde_json::json!({
            "format": format,
            "class_name": class_name,
            "predictors": sorted.iter().map(|p| serde_json::json!({
                "name": p.name,
                "signature": p.signature,
                "fields": p.fields.as_ref().map(|f| f.iter().map(|f| &f.name).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
        });
        let fingerprint = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
        PredictorLayout {
            format,
            class_name,
            predictors,
            fingerprint,
        }
    }

    /// Whether the program is a DSPy or DSPy.rb program.
    pub fn is_dspy(&self) -> bool {
        self.format != ProgramFormat::Other
    }
}

/// Whether two programs can replace each other, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compatibility {
    pub compatible: bool,
    pub differences: Vec<String>,
}

/// Compares the layouts of program A and program B.
///
/// Loading a DSPy state into a program matches predictors by name and then assigns the saved
/// fields to the program's fields BY POSITION, so a program with other fields is silently
/// corrupted. Two programs are compatible when they have the same format (and DSPy.rb class), the
/// same predictor names, and per predictor the same signature class and the same field names in
/// the same order (fields are compared only when both programs record them). Prefixes,
/// descriptions, instructions and demos may differ: they are what loading replaces.
///
/// Conservative otherwise: a missing layout (a program stored before layouts were recorded) or a
/// program that is not a DSPy program is never reported compatible, since nothing can be checked;
/// `differences` says why.
pub fn compatibility(a: Option<&PredictorLayout>, b: Option<&PredictorLayout>) -> Compatibility {
    let mut differences = Vec::new();
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => {
            for (side, layout) in [("A", a), ("B", b)] {
                if layout.is_none() {
                    differences.push(format!(
                        "program {side} was stored before predictor layouts were recorded; store it again to compare it"
                    ));
                }
            }
            return Compatibility {
                compatible: false,
                differences,
            };
        }
    };
    if !a.is_dspy() || !b.is_dspy() {
        if !a.is_dspy() && !b.is_dspy() {
            differences.push(
                "neither program is a DSPy program: there is no predictor layout to compare"
                    .to_owned(),
            );
        } else {
            for (side, layout) in [("A", a), ("B", b)] {
                if !layout.is_dspy() {
                    differences.push(format!(
                        "program {side} is not a DSPy program (no predictors)"
                    ));
                }
            }
        }
        return Compatibility {
            compatible: false,
            differences,
        };
    }
    if a.format != b.format {
        differences.push(format!(
            "program A is {}, program B is {}",
            a.format.describe(),
            b.format.describe()
        ));
        return Compatibility {
            compatible: false,
            differences,
        };
    }
    if a.class_name != b.class_name {
        differences.push(format!(
            "program class: {} vs {}",
            quoted(a.class_name.as_deref()),
            quoted(b.class_name.as_deref())
        ));
    }
    for p in &a.predictors {
        match b.predictors.iter().find(|q| q.name == p.name) {
            None => differences.push(format!("predictor `{}` exists only in A", p.name)),
            Some(q) => compare_predictors(p, q, &mut differences),
        }
    }
    for q in &b.predictors {
        if !a.predictors.iter().any(|p| p.name == q.name) {
            differences.push(format!("predictor `{}` exists only in B", q.name));
        }
    }
    Compatibility {
        compatible: differences.is_empty(),
        differences,
    }
}

fn quoted(s: Option<&str>) -> String {
    match s {
        Some(s) => format!("`{s}`"),
        None => "none".to_owned(),
    }
}

fn compare_predictors(p: &PredictorShape, q: &PredictorShape, out: &mut Vec<String>) {
    if p.signature != q.signature {
        out.push(format!(
            "signature of `{}`: {} vs {}",
            p.name,
            quoted(p.signature.as_deref()),
            quoted(q.signature.as_deref())
        ));
    }
    let (Some(fa), Some(fb)) = (&p.fields, &q.fields) else {
        return;
    };
    if fa.len() != fb.len() {
        out.push(format!(
            "`{}` has {} fields in A and {} in B",
            p.name,
            fa.len(),
            fb.len()
        ));
    }
    for i in 0..fa.len().max(fb.len()) {
        match (fa.get(i), fb.get(i)) {
            (Some(x), Some(y)) if x.name != y.name => out.push(format!(
                "field {} of `{}`: `{}` vs `{}`",
                i + 1,
                p.name,
                x.name,
                y.name
            )),
            (Some(x), None) => out.push(format!(
                "field {} of `{}` (`{}`) exists only in A",
                i + 1,
                p.name,
                x.name
            )),
            (None, Some(y)) => out.push(format!(
                "field {} of `{}` (`{}`) exists only in B",
                i + 1,
                p.name,
                y.name
            )),
            _ => {}
        }
    }
}

// ----- diff -----------------------------------------------------------------------------------

/// How two programs were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Both are DSPy programs of the same format: compared per predictor.
    Dspy,
    /// Compared as JSON.
    Json,
}

/// The difference between program A (`from`) and program B (`to`).
///
/// For a `dspy` diff, `predictors` compares every predictor of either program and `changes` lists
/// the JSON changes outside the predictors' instructions, fields and demos (`lm`, `metadata`, an
/// envelope's optimization result, ...). For a `json` diff, `changes` lists every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramDiff {
    pub kind: DiffKind,
    /// The two programs are the same JSON value (object key order aside).
    pub identical: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<ProgramFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictors: Option<Vec<PredictorDiff>>,
    pub changes: Vec<PointerChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorStatus {
    Added,
    Removed,
    Changed,
    Unchanged,
}

/// How one predictor changed from A to B (an added predictor is compared with an empty one, a
/// removed one with an empty one in B).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictorDiff {
    pub name: String,
    pub status: PredictorStatus,
    /// DSPy.rb: the signature class, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<ValueChange<Option<String>>>,
    /// A unified diff of the instructions, when they changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions_diff: Option<String>,
    #[serde(skip_serializing_if = "DemoChanges::is_empty")]
    pub demos: DemoChanges,
    #[serde(skip_serializing_if = "FieldChanges::is_empty")]
    pub fields: FieldChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueChange<T> {
    pub from: T,
    pub to: T,
}

/// Demos present in only one program (compared as canonical JSON, counting duplicates).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DemoChanges {
    /// Demos of B that A does not have; `index` is the position in B.
    pub added: Vec<IndexedDemo>,
    /// Demos of A that B does not have; `index` is the position in A.
    pub removed: Vec<IndexedDemo>,
}

impl DemoChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexedDemo {
    pub index: usize,
    pub demo: Value,
}

/// Fields matched by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FieldChanges {
    pub added: Vec<Field>,
    pub removed: Vec<Field>,
    /// Fields of both with another prefix, description or type.
    pub changed: Vec<FieldChange>,
    /// The fields both have are in another order.
    pub reordered: bool,
}

impl FieldChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.reordered
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub name: String,
    pub from: Field,
    pub to: Field,
}

/// One JSON change. `path` is an RFC 6901 JSON pointer: for `remove` it locates the value in A,
/// for `add` and `replace` in B (array elements compared pairwise take their position in B).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointerChange {
    pub op: PointerOp,
    pub path: String,
    /// The value in A (`remove`, `replace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The value in B (`add`, `replace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PointerOp {
    Add,
    Remove,
    Replace,
}

/// Compares program A (`from`) with program B (`to`).
pub fn diff(from: &Value, to: &Value) -> ProgramDiff {
    diff_labeled(from, to, "A", "B")
}

/// [`diff`], naming the two sides `label_a` and `label_b` in the unified diffs' headers.
pub fn diff_labeled(from: &Value, to: &Value, label_a: &str, label_b: &str) -> ProgramDiff {
    let identical = from == to;
    match (parse_program(from), parse_program(to)) {
        (Some(a), Some(b)) if a.format == b.format => {
            let predictors = diff_predictors(&a, &b, label_a, label_b);
            let changes = json_pointer_diff(&strip_parsed(from, &a), &strip_parsed(to, &b));
            ProgramDiff {
                kind: DiffKind::Dspy,
                identical,
                format: Some(a.format),
                predictors: Some(predictors),
                changes,
            }
        }
        _ => ProgramDiff {
            kind: DiffKind::Json,
            identical,
            format: None,
            predictors: None,
            changes: json_pointer_diff(from, to),
        },
    }
}

fn empty_predictor(name: &str) -> Predictor {
    Predictor {
        name: name.to_owned(),
        signature: None,
        instructions: String::new(),
        fields: Vec::new(),
        fields_known: true,
        demos: Vec::new(),
    }
}

fn diff_predictors(
    a: &DspyProgram,
    b: &DspyProgram,
    label_a: &str,
    label_b: &str,
) -> Vec<PredictorDiff> {
    let mut out = Vec::new();
    for p in &a.predictors {
        match b.predictors.iter().find(|q| q.name == p.name) {
            Some(q) => out.push(diff_predictor(
                p,
                q,
                PredictorStatus::Changed,
                label_a,
                label_b,
            )),
            None => out.push(diff_predictor(
                p,
                &empty_predictor(&p.name),
                PredictorStatus::Removed,
                label_a,
                label_b,
            )),
        }
    }
    for q in &b.predictors {
        if !a.predictors.iter().any(|p| p.name == q.name) {
            out.push(diff_predictor(
                &empty_predictor(&q.name),
                q,
                PredictorStatus::Added,
                label_a,
                label_b,
            ));
        }
    }
    out
}

fn diff_predictor(
    a: &Predictor,
    b: &Predictor,
    status: PredictorStatus,
    label_a: &str,
    label_b: &str,
) -> PredictorDiff {
    let signature =
        (a.signature != b.signature && status == PredictorStatus::Changed).then(|| ValueChange {
            from: a.signature.clone(),
            to: b.signature.clone(),
        });
    let instructions_diff = unified_diff(
        &a.instructions,
        &b.instructions,
        &format!("{label_a}/{}", a.name),
        &format!("{label_b}/{}", b.name),
    );
    let demos = diff_demos(&a.demos, &b.demos);
    let fields = if a.fields_known && b.fields_known {
        diff_fields(&a.fields, &b.fields)
    } else {
        FieldChanges::default()
    };
    let status = match status {
        PredictorStatus::Changed
            if signature.is_none()
                && instructions_diff.is_none()
                && demos.is_empty()
                && fields.is_empty() =>
        {
            PredictorStatus::Unchanged
        }
        s => s,
    };
    PredictorDiff {
        name: a.name.clone(),
        status,
        signature,
        instructions_diff,
        demos,
        fields,
    }
}

/// A unified diff (3 lines of context) of two texts, `None` when they are equal.
pub fn unified_diff(a: &str, b: &str, label_a: &str, label_b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let with_newline = |s: &str| {
        if s.is_empty() || s.ends_with('\n') {
            s.to_owned()
        } else {
            format!("{s}\n")
        }
    };
    let (a, b) = (with_newline(a), with_newline(b));
    let diff = similar::TextDiff::configure()
        .timeout(Duration::from_secs(2))
        .diff_lines(&a, &b);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(label_a, label_b)
        .to_string();
    Some(text)
}

fn diff_demos(a: &[Value], b: &[Value]) -> DemoChanges {
    let key_a: Vec<String> = a.iter().map(canonical_json).collect();
    let key_b: Vec<String> = b.iter().map(canonical_json).collect();
    let mut count_b: HashMap<&str, usize> = HashMap::new();
    for k in &key_b {
        *count_b.entry(k).or_default() += 1;
    }
    let mut count_a: HashMap<&str, usize> = HashMap::new();
    for k in &key_a {
        *count_a.entry(k).or_default() += 1;
    }
    let mut removed = Vec::new();
    for (i, k) in key_a.iter().enumerate() {
        match count_b.get_mut(k.as_str()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => removed.push(IndexedDemo {
                index: i,
                demo: a[i].clone(),
            }),
        }
    }
    let mut added = Vec::new();
    for (i, k) in key_b.iter().enumerate() {
        match count_a.get_mut(k.as_str()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => added.push(IndexedDemo {
                index: i,
                demo: b[i].clone(),
            }),
        }
    }
    DemoChanges { added, removed }
}

fn diff_fields(a: &[Field], b: &[Field]) -> FieldChanges {
    let mut changes = FieldChanges::default();
    for f in a {
        match b.iter().find(|g| g.name == f.name) {
            None => changes.removed.push(f.clone()),
            Some(g) if g != f => changes.changed.push(FieldChange {
                name: f.name.clone(),
                from: f.clone(),
                to: g.clone(),
            }),
            Some(_) => {}
        }
    }
    for g in b {
        if !a.iter().any(|f| f.name == g.name) {
            changes.added.push(g.clone());
        }
    }
    let common_a: Vec<&str> = a
        .iter()
        .filter(|f| b.iter().any(|g| g.name == f.name))
        .map(|f| f.name.as_str())
        .collect();
    let common_b: Vec<&str> = b
        .iter()
        .filter(|g| a.iter().any(|f| f.name == g.name))
        .map(|g| g.name.as_str())
        .collect();
    changes.reordered = common_a != common_b;
    changes
}

/// The program without what the predictor diff already covers (instructions, fields, demos, the
/// DSPy.rb signature class).
fn strip_parsed(value: &Value, program: &DspyProgram) -> Value {
    let mut v = value.clone();
    let strip_dspy = |state: &mut Value| {
        if let Some(obj) = state.as_object_mut() {
            obj.remove("demos");
            if let Some(Value::Object(sig)) = obj.get_mut("signature") {
                sig.remove("instructions");
                sig.remove("fields");
                if sig.is_empty() {
                    obj.remove("signature");
                }
            }
        }
    };
    match program.format {
        ProgramFormat::Dspy => {
            if is_predictor_state(value) {
                strip_dspy(&mut v);
            } else {
                for p in &program.predictors {
                    if let Some(state) = v.get_mut(&p.name) {
                        strip_dspy(state);
                    }
                }
            }
        }
        ProgramFormat::DspyRb => {
            let state = if v.get("program_data").is_some() {
                v.get_mut("program_data").and_then(|pd| pd.get_mut("state"))
            } else if v.get("state").is_some_and(Value::is_object) {
                v.get_mut("state")
            } else {
                Some(&mut v)
            };
            if let Some(Value::Object(state)) = state {
                for key in ["signature_class", "instruction", "few_shot_examples"] {
                    state.remove(key);
                }
            }
        }
        ProgramFormat::Other => {}
    }
    v
}

/// JSON with object keys sorted at every level: equal values have equal canonical texts.
pub fn canonical_json(value: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Escapes one JSON-pointer reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every change from A to B as JSON-pointer operations. Object members are matched by key; array
/// elements by an LCS of their canonical JSON, elements replaced in place being compared pairwise.
pub fn json_pointer_diff(from: &Value, to: &Value) -> Vec<PointerChange> {
    let mut out = Vec::new();
    walk(from, to, &mut String::new(), &mut out);
    out
}

fn push(
    out: &mut Vec<PointerChange>,
    op: PointerOp,
    path: String,
    from: Option<&Value>,
    value: Option<&Value>,
) {
    out.push(PointerChange {
        op,
        path,
        from: from.cloned(),
        value: value.cloned(),
    });
}

fn walk(a: &Value, b: &Value, path: &mut String, out: &mut Vec<PointerChange>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let len = path.len();
                path.push('/');
                path.push_str(&escape_pointer_token(k));
                match y.get(k) {
                    Some(vb) => walk(va, vb, path, out),
                    None => push(out, PointerOp::Remove, path.clone(), Some(va), None),
                }
                path.truncate(len);
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = format!("{path}/{}", escape_pointer_token(k));
                    push(out, PointerOp::Add, p, None, Some(vb));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => walk_arrays(x, y, path, out),
        _ if a == b => {}
        _ => push(out, PointerOp::Replace, path.clone(), Some(a), Some(b)),
    }
}

fn walk_arrays(x: &[Value], y: &[Value], path: &mut String, out: &mut Vec<PointerChange>) {
    if x == y {
        return;
    }
    let kx: Vec<String> = x.iter().map(canonical_json).collect();
    let ky: Vec<String> = y.iter().map(canonical_json).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let ops =
        similar::capture_diff_slices_deadline(similar::Algorithm::Myers, &kx, &ky, Some(deadline));
    let at = |path: &str, i: usize| format!("{path}/{i}");
    for op in ops {
        let (tag, old, new) = op.as_tag_tuple();
        match tag {
            similar::DiffTag::Equal => {}
            similar::DiffTag::Delete => {
                for i in old {
                    push(out, PointerOp::Remove, at(path, i), Some(&x[i]), None);
                }
            }
            similar::DiffTag::Insert => {
                for j in new {
                    push(out, PointerOp::Add, at(path, j), None, Some(&y[j]));
                }
            }
            similar::DiffTag::Replace => {
                let paired = old.len().min(new.len());
                for k in 0..paired {
                    let (i, j) = (old.start + k, new.start + k);
                    let len = path.len();
                    let _ = write!(path, "/{j}");
                    walk(&x[i], &y[j], path, out);
                    path.truncate(len);
                }
                let (removed, added) = (old.start + paired..old.end, new.start + paired..new.end);
                for i in removed {
                    push(out, PointerOp::Remove, at(path, i), Some(&x[i]), None);
                }
                for j in added {
                    push(out, PointerOp::Add, at(path, j), None, Some(&y[j]));
                }
            }
        }
    }
}

// ----- prompt ---------------------------------------------------------------------------------

/// Renders a program's prompts as Markdown: per predictor its instructions, fields and demos. For
/// JSON that is not a DSPy program, a short note and the pretty-printed JSON.
pub fn render_prompt(value: &Value) -> String {
    render_prompt_titled(value, "Program prompts")
}

/// [`render_prompt`] under a title of the caller's choice (a Markdown heading line's text).
pub fn render_prompt_titled(value: &Value, title: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", one_line(title));
    let Some(program) = parse_program(value) else {
        md.push_str(
            "_This program is not a DSPy state file or a DSPy.rb program: it has no predictors to \
             render. Its JSON:_\n\n",
        );
        let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
        push_fenced(&mut md, "json", &pretty, "");
        return md;
    };
    let count = program.predictors.len();
    let _ = write!(
        md,
        "_{}{} · {count} predictor{}_\n\n",
        match program.format {
            ProgramFormat::Dspy => "DSPy state file".to_owned(),
            _ => "DSPy.rb program".to_owned(),
        },
        program
            .class_name
            .as_deref()
            .map(|c| format!(" · `{}`", one_line(c)))
            .unwrap_or_default(),
        if count == 1 { "" } else { "s" }
    );
    for p in &program.predictors {
        let _ = write!(md, "## Predictor `{}`", one_line(&p.name));
        if let Some(sig) = &p.signature {
            let _ = write!(md, " — signature `{}`", one_line(sig));
        }
        md.push_str("\n\n### Instructions\n\n");
        if p.instructions.trim().is_empty() {
            md.push_str("_(none)_\n\n");
        } else {
            push_fenced(&mut md, "text", &p.instructions, "");
            md.push('\n');
        }
        md.push_str("### Fields\n\n");
        if !p.fields_known {
            md.push_str("_The program does not record its signature's fields._\n\n");
        } else if p.fields.is_empty() {
            md.push_str("_(none)_\n\n");
        } else {
            let with_type = p.fields.iter().any(|f| f.ty.is_some() || f.role.is_some());
            if with_type {
                md.push_str("| # | Field | Role | Type | Description |\n|---|---|---|---|---|\n");
            } else {
                md.push_str("| # | Field | Prefix | Description |\n|---|---|---|---|\n");
            }
            for (i, f) in p.fields.iter().enumerate() {
                let desc = cell(f.description.as_deref().unwrap_or(""));
                if with_type {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {desc} |",
                        i + 1,
                        cell(&f.name),
                        cell(f.role.as_deref().unwrap_or("")),
                        cell(f.ty.as_deref().unwrap_or("")),
                    );
                } else {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {desc} |",
                        i + 1,
                        cell(&f.name),
                        cell(f.prefix.as_deref().unwrap_or("")),
                    );
                }
            }
            md.push('\n');
        }
        let _ = write!(md, "### Demos ({})\n\n", p.demos.len());
        if p.demos.is_empty() {
            md.push_str("_(none)_\n\n");
        }
        for (i, demo) in p.demos.iter().enumerate() {
            let _ = write!(md, "#### Demo {}\n\n", i + 1);
            match demo.as_object() {
                Some(obj) if !obj.is_empty() => {
                    for (k, v) in obj {
                        push_demo_value(&mut md, k, v);
                    }
                    if !md.ends_with("\n\n") {
                        md.push('\n');
                    }
                }
                _ => {
                    let pretty = serde_json::to_string_pretty(demo).unwrap_or_default();
                    push_fenced(&mut md, "json", &pretty, "");
                    md.push('\n');
                }
            }
        }
    }
    while md.ends_with("\n\n") {
        md.pop();
    }
    md
}

fn push_demo_value(md: &mut String, key: &str, value: &Value) {
    let key = one_line(key);
    match value {
        Value::String(s) if !s.contains('\n') && !s.contains('`') => {
            let _ = writeln!(md, "- **{key}**: {}", if s.is_empty() { "\"\"" } else { s });
        }
        Value::String(s) => {
            let _ = writeln!(md, "- **{key}**:\n");
            push_fenced(md, "text", s, "  ");
            md.push('\n');
        }
        Value::Object(_) | Value::Array(_) => {
            let _ = writeln!(md, "- **{key}**:\n");
            let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
            push_fenced(md, "json", &pretty, "  ");
            md.push('\n');
        }
        other => {
            let _ = writeln!(md, "- **{key}**: `{other}`");
        }
    }
}

/// A fenced code block longer than any backtick run of the text, each line indented by `indent`.
fn push_fenced(md: &mut String, lang: &str, text: &str, indent: &str) {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(md, "{indent}{fence}{lang}");
    for line in text.lines() {
        if line.is_empty() {
            md.push('\n');
        } else {
            let _ = writeln!(md, "{indent}{line}");
        }
    }
    let _ = writeln!(md, "{indent}{fence}");
}

/// A table cell: pipes escaped, line breaks as `<br>`.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace('\n', "<br>")
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REACT: &str = include_str!("../../tests/fixtures/dspy_react_optimized.json");
    const DSPYRB: &str = include_str!("../../tests/fixtures/dspyrb_chain_of_thought_miprov2.json");

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
