//! The DSPy-aware diff of two programs (per predictor: instructions, fields, demos) and the
//! JSON-pointer diff of other JSON.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::parse::*;

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

pub(super) fn empty_predictor(name: &str) -> Predictor {
    Predictor {
        name: name.to_owned(),
        signature: None,
        instructions: String::new(),
        fields: Vec::new(),
        fields_known: true,
        demos: Vec::new(),
    }
}

pub(super) fn diff_predictors(
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

pub(super) fn diff_predictor(
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

pub(super) fn diff_demos(a: &[Value], b: &[Value]) -> DemoChanges {
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

pub(super) fn diff_fields(a: &[Field], b: &[Field]) -> FieldChanges {
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
pub(super) fn strip_parsed(value: &Value, program: &DspyProgram) -> Value {
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

pub(super) fn push(
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

pub(super) fn walk(a: &Value, b: &Value, path: &mut String, out: &mut Vec<PointerChange>) {
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

pub(super) fn walk_arrays(
    x: &[Value],
    y: &[Value],
    path: &mut String,
    out: &mut Vec<PointerChange>,
) {
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
