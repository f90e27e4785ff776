//! A program's layout (its predictors' names and fields) and whether two programs can replace
//! each other.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::parse::*;

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

pub(super) fn quoted(s: Option<&str>) -> String {
    match s {
        Some(s) => format!("`{s}`"),
        None => "none".to_owned(),
    }
}

pub(super) fn compare_predictors(p: &PredictorShape, q: &PredictorShape, out: &mut Vec<String>) {
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
