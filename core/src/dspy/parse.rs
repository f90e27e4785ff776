//! Parsing a program's JSON: DSPy state files and DSPy.rb envelopes into predictors (fields,
//! instructions, demos).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    pub(super) fn describe(self) -> &'static str {
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
pub(super) fn is_predictor_state(v: &Value) -> bool {
    v.get("signature").is_some_and(Value::is_object) && v.get("demos").is_some_and(Value::is_array)
}

pub(super) fn dspy_predictor(name: &str, state: &Map<String, Value>) -> Predictor {
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
pub(super) fn field_name(prefix: Option<&str>, description: Option<&str>, index: usize) -> String {
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

pub(super) fn parse_dspy_rb(obj: &Map<String, Value>) -> Option<DspyProgram> {
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
pub(super) fn is_dspy_rb_state(obj: &Map<String, Value>) -> bool {
    obj.get("signature_class").is_some_and(Value::is_string)
        && (obj.contains_key("instruction") || obj.contains_key("few_shot_examples"))
        && obj.keys().all(|k| {
            matches!(
                k.as_str(),
                "signature_class" | "instruction" | "few_shot_examples"
            )
        })
}
