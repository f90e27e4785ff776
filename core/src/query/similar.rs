//! Similar programs.
//!
//! `similarity = 0.35 · signature + 0.20 · performance + 0.20 · parameters + 0.25 · instructions`,
//! each component in [0, 1]:
//!
//! * **signature**: 1 for the same signature; otherwise 0.9 × the character similarity of the two
//!   names (the `similar` crate's ratio: 2 × matching characters / total characters).
//! * **performance**: `1 − min(1, |a − b|)` of the primary scores; 1 when both have none, 0 when
//!   only one has one.
//! * **parameters**: the mean, over the optimization parameters either program records, of their
//!   agreement: `optimization_method` (1 if equal), `examples_count` and `optimization_time`
//!   (`min/max` of the two numbers), and each key of a `parameters` / `optimizer_params` object
//!   (1 if equal, numbers by `min/max`); a parameter only one program has counts 0. 1 when
//!   neither records any.
//! * **instructions**: the word similarity of the programs' instruction texts (every predictor's
//!   instructions, in order); 1 when both have none. Archived programs' blobs are not read: their
//!   instructions count 0.
//!
//! Candidates are the programs of the same project, newest first (the project index, GSI4), at
//! most [`MAX_CANDIDATES`] of them. Instruction texts are only read (blob reads) for candidates
//! that could still reach the threshold, at most [`MAX_BLOB_READS`] of them, best first.

use serde::Serialize;
use serde_json::Value;

use super::exec::SearchHit;
use crate::backend::{Index, Query};
use crate::domain::{ProgramId, ProgramStatus};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::{from_item, ProgramRecord};
use crate::storage::Storage;

pub const W_SIGNATURE: f64 = 0.35;
pub const W_PERFORMANCE: f64 = 0.20;
pub const W_PARAMETERS: f64 = 0.20;
pub const W_INSTRUCTIONS: f64 = 0.25;
pub const MAX_CANDIDATES: usize = 2000;
pub const MAX_BLOB_READS: usize = 200;

/// The components of a similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Components {
    pub signature: f64,
    pub performance: f64,
    pub parameters: f64,
    pub instructions: f64,
}

impl Components {
    pub fn total(&self) -> f64 {
        W_SIGNATURE * self.signature
            + W_PERFORMANCE * self.performance
            + W_PARAMETERS * self.parameters
            + W_INSTRUCTIONS * self.instructions
    }
}

fn round(x: f64) -> f64 {
    (x.clamp(0.0, 1.0) * 1e6).round() / 1e6
}

fn ratio(a: f64, b: f64) -> f64 {
    let (a, b) = (a.abs(), b.abs());
    if a == b {
        1.0
    } else {
        a.min(b) / a.max(b)
    }
}

pub fn signature_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        1.0
    } else {
        0.9 * similar::TextDiff::from_chars(a, b).ratio() as f64
    }
}

pub fn performance_similarity(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(x), Some(y)) => 1.0 - (x - y).abs().min(1.0),
        (None, None) => 1.0,
        _ => 0.0,
    }
}

fn value_agreement(a: Option<&Value>, b: Option<&Value>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (Some(x), Some(y)) => Some(match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => ratio(p, q),
            _ => f64::from(u8::from(x == y)),
        }),
        _ => Some(0.0),
    }
}

pub fn parameter_similarity(a: &ProgramRecord, b: &ProgramRecord) -> f64 {
    let mut scores = Vec::new();
    for key in ["optimization_method", "examples_count", "optimization_time"] {
        scores.extend(value_agreement(a.metadata.get(key), b.metadata.get(key)));
    }
    for key in ["parameters", "optimizer_params"] {
        let pa = a.metadata.get(key).and_then(Value::as_object);
        let pb = b.metadata.get(key).and_then(Value::as_object);
        let mut names: Vec<&String> = pa.into_iter().chain(pb).flat_map(|m| m.keys()).collect();
        names.sort();
        names.dedup();
        for n in names {
            scores.extend(value_agreement(
                pa.and_then(|m| m.get(n)),
                pb.and_then(|m| m.get(n)),
            ));
        }
    }
    if scores.is_empty() {
        1.0
    } else {
        scores.iter().sum::<f64>() / scores.len() as f64
    }
}

pub fn instruction_similarity(a: &str, b: &str) -> f64 {
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => 1.0,
        (false, false) => similar::TextDiff::from_words(a, b).ratio() as f64,
        _ => 0.0,
    }
}

/// Every predictor's instructions of a program, in order (empty for non-DSPy JSON).
pub fn instructions_of(program: &Value) -> String {
    crate::dspy::parse_predictors(program)
        .map(|ps| {
            ps.iter()
                .map(|p| p.instructions.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

impl Storage {
    /// The instructions of a program whose record is in hand (its blob read, not counted as a
    /// load).
    async fn instructions(&self, r: &ProgramRecord) -> Result<Option<String>> {
        if r.status != ProgramStatus::Active {
            return Ok(None);
        }
        match self.load_blob(r.clone()).await {
            Ok(p) => {
                let v: Value = serde_json::from_str(p.program.get())
                    .map_err(|e| Error::Integrity(format!("stored program is not JSON: {e}")))?;
                Ok(Some(instructions_of(&v)))
            }
            Err(Error::NotFound(_)) | Err(Error::Archived(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Programs similar to `id` with a similarity of at least `threshold`, most similar first
    /// (see the module doc for the formula). The program itself is never among them.
    pub async fn similar(
        &self,
        who: &crate::access::Principal,
        id: &ProgramId,
        threshold: f64,
        limit: usize,
    ) -> Result<Vec<SimilarHit>> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::invalid(
                "threshold",
                "threshold must be between 0 and 1",
            ));
        }
        let target = self.get_record(who, id).await?;
        let mut candidates = Vec::new();
        let mut start = None;
        loop {
            let q = Query::new(Index::Gsi4, keys::project_pk(&target.project))
                .forward(false)
                .limit(1000)
                .start(start.take());
            let page = self.items.query(&q).await?;
            for item in &page.items {
                let r: ProgramRecord = from_item(item)?;
                if r.id != target.id {
                    candidates.push(r);
                }
            }
            match page.next {
                Some(n) if candidates.len() < MAX_CANDIDATES => start = Some(n),
                _ => break,
            }
        }
        candidates.truncate(MAX_CANDIDATES);
        let mut scored: Vec<(Components, ProgramRecord)> = candidates
            .into_iter()
            .map(|r| {
                let c = Components {
                    signature: signature_similarity(
                        target.signature.as_str(),
                        r.signature.as_str(),
                    ),
                    performance: performance_similarity(target.primary_score, r.primary_score),
                    parameters: parameter_similarity(&target, &r),
                    instructions: 0.0,
                };
                (c, r)
            })
            // Even identical instructions cannot lift these to the threshold.
            .filter(|(c, _)| c.total() + W_INSTRUCTIONS >= threshold - 1e-9)
            .collect();
        scored.sort_by(|a, b| b.0.total().total_cmp(&a.0.total()));
        scored.truncate(MAX_BLOB_READS);
        let mine = self.instructions(&target).await?;
        let mut out = Vec::new();
        for (mut c, r) in scored {
            c.instructions = match (&mine, self.instructions(&r).await?) {
                (Some(a), Some(b)) => instruction_similarity(a, &b),
                _ => 0.0,
            };
            let total = round(c.total());
            if total >= threshold - 1e-9 {
                out.push(SimilarHit {
                    hit: SearchHit::of(&r, 1.0),
                    similarity: total,
                    components: Components {
                        signature: round(c.signature),
                        performance: round(c.performance),
                        parameters: round(c.parameters),
                        instructions: round(c.instructions),
                    },
                });
            }
        }
        out.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then_with(|| b.hit.id.cmp(&a.hit.id))
        });
        out.truncate(limit);
        Ok(out)
    }
}

/// One similar program.
#[derive(Debug, Clone, Serialize)]
pub struct SimilarHit {
    #[serde(flatten)]
    pub hit: SearchHit,
    pub similarity: f64,
    pub components: Components,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_bounded() {
        assert_eq!(signature_similarity("A", "A"), 1.0);
        let s = signature_similarity("ClassifyText", "ClassifyTexts");
        assert!(s > 0.8 && s < 0.9, "{s}");
        assert_eq!(
            performance_similarity(Some(0.9), Some(0.8)),
            1.0 - 0.1f64.min(1.0)
        );
        assert_eq!(performance_similarity(Some(0.9), None), 0.0);
        assert_eq!(instruction_similarity("", " "), 1.0);
        assert_eq!(
            instruction_similarity("classify the text", "classify the text"),
            1.0
        );
        let w = W_SIGNATURE + W_PERFORMANCE + W_PARAMETERS + W_INSTRUCTIONS;
        assert!((w - 1.0).abs() < 1e-12);
    }
}
