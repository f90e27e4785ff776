//! The work: synthetic DSPy programs of about 8 KB (the shape `module.save()` writes, the size
//! the MLflow side uses), their metadata, and seeding a store with them.

use dspy_storage_core::access::OPERATOR;
use std::sync::Arc;

use dspy_storage_core::domain::{NewMetadata, ProgramId};
use dspy_storage_core::storage::Storage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, value::RawValue, Value};

use crate::BenchResult;

const WORDS: &[&str] = &[
    "answer",
    "question",
    "context",
    "reason",
    "step",
    "evidence",
    "claim",
    "passage",
    "summarize",
    "extract",
    "entity",
    "relation",
    "label",
    "classify",
    "sentiment",
    "retrieve",
    "document",
    "query",
    "rewrite",
    "verify",
    "fact",
    "cite",
    "source",
    "generate",
    "concise",
    "detailed",
    "output",
    "input",
    "field",
    "example",
    "chain",
    "thought",
    "careful",
    "analysis",
    "premise",
    "hypothesis",
    "conclusion",
    "math",
    "solve",
    "program",
    "code",
    "explain",
    "translate",
    "language",
    "user",
    "assistant",
    "instruction",
    "follow",
    "format",
    "json",
];

pub const METHODS: &[&str] = &["miprov2", "bootstrap_fewshot", "copro", "simba"];
pub const TAGS: &[&str] = &["prod", "exp", "fast", "accurate", "cheap", "large"];

fn text(rng: &mut StdRng, words: usize) -> String {
    let mut s = String::with_capacity(words * 8);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    s
}

/// A DSPy (Python) state file of one ChainOfThought predictor: instructions, four fields and
/// 4–8 demos; about 8 KB of JSON.
pub fn program(seed: u64) -> Value {
    let mut rng = StdRng::seed_from_u64(seed);
    let demo_words = rng.gen_range(36..90);
    let demos: Vec<Value> = (0..rng.gen_range(4..=8))
        .map(|_| {
            json!({
                "augmented": rng.gen_bool(0.5),
                "question": text(&mut rng, demo_words / 3),
                "context": text(&mut rng, demo_words),
                "reasoning": text(&mut rng, demo_words / 2),
                "answer": text(&mut rng, 8),
            })
        })
        .collect();
    let words = rng.gen_range(110..240);
    let instructions = text(&mut rng, words);
    json!({
        "generate_answer.predict": {
            "traces": [],
            "train": [],
            "demos": demos,
            "signature": {
                "instructions": instructions,
                "fields": [
                    {"prefix": "Question:", "description": text(&mut rng, 18)},
                    {"prefix": "Context:", "description": text(&mut rng, 18)},
                    {"prefix": "Reasoning:", "description": text(&mut rng, 14)},
                    {"prefix": "Answer:", "description": text(&mut rng, 12)},
                ]
            },
            "lm": null
        },
        "metadata": {"dependency_versions": {"python": "3.11", "dspy": "2.6.0", "cloudpickle": "3.0"}}
    })
}

/// The metadata of a program of `signature` (version chosen by the store: next patch). Stored
/// now: the 90-day metric histories posted to it are backfilled records, which the metrics route
/// accepts (any time from 2000 on).
pub fn metadata(signature: &str, seed: u64) -> Value {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let a = rng.gen_range(0..TAGS.len());
    let b = (a + rng.gen_range(1..TAGS.len())) % TAGS.len();
    json!({
        "signature": signature,
        "optimization_method": METHODS[rng.gen_range(0..METHODS.len())],
        "performance": {"score": (rng.gen_range(0.5..1.0f64) * 1e4).round() / 1e4},
        "examples_count": rng.gen_range(20..500),
        "tags": [TAGS[a], TAGS[b]],
        "team": "bench",
        "description": "a synthetic benchmark program",
        // Ten programs per shard whatever the store's size: the free-text case's matches.
        "dataset": shard_word(seed / 10),
    })
}

/// The dataset word of shard `k` (fixed width: no shard's word is a prefix of another's).
pub fn shard_word(k: u64) -> String {
    format!("shard{k:07}")
}

/// The body of `POST /programs`.
pub fn store_body(signature: &str, seed: u64) -> Value {
    json!({"program": program(seed), "metadata": metadata(signature, seed)})
}

/// Stores one program in-process, as `POST /programs` would.
pub async fn store(storage: &Storage, signature: &str, seed: u64) -> BenchResult<ProgramId> {
    let raw = RawValue::from_string(program(seed).to_string())?;
    let meta = NewMetadata::parse(metadata(signature, seed), dspy_storage_core::domain::now())?;
    Ok(storage.store(&OPERATOR, &raw, meta, None).await?.stored.id)
}

/// What a seeded store holds.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    pub ids: Vec<ProgramId>,
    pub signatures: Vec<String>,
    /// Seconds the seeding took (all programs).
    pub seconds: f64,
}

impl Seeded {
    /// A program id picked deterministically by `i`.
    pub fn id(&self, i: u64) -> ProgramId {
        self.ids[(i.wrapping_mul(7919) % self.ids.len() as u64) as usize]
    }
    pub fn signature(&self, i: u64) -> &str {
        &self.signatures[(i.wrapping_mul(31) % self.signatures.len() as u64) as usize]
    }
}

/// Stores `n` programs over `signatures` signatures (`<prefix>.Sig<k>`), `workers` at a time
/// (each worker owns whole signatures, so versions never contend).
pub async fn seed(
    storage: &Arc<Storage>,
    prefix: &str,
    n: usize,
    signatures: usize,
    workers: usize,
) -> BenchResult<Seeded> {
    let signatures = signatures.clamp(1, n.max(1));
    let names: Vec<String> = (0..signatures)
        .map(|k| format!("{prefix}.Sig{k}"))
        .collect();
    let started = std::time::Instant::now();
    let workers = workers.clamp(1, signatures);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let storage = storage.clone();
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            // Program j goes to signature j % signatures; this worker owns signatures ≡ w.
            for j in (0..n).filter(|j| (j % names.len()) % workers == w) {
                ids.push(store(&storage, &names[j % names.len()], j as u64).await?);
            }
            BenchResult::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(Seeded {
        ids,
        signatures: names,
        seconds: started.elapsed().as_secs_f64(),
    })
}
