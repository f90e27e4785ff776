//! The free-text index: which words a program is found by, and the index entries that find it.
//!
//! **Words.** A program's text is its signature, its tags, its description and every string in
//! its metadata except the values the service sets itself (`version`, `project`, `created_at`,
//! `rollback_from`, `rollback_to`, `rollback_timestamp`). The text is lowercased and cut into
//! words at every character that is not a letter or a digit (`qa.Answer` → `qa`, `answer`;
//! `imdb-reviews` → `imdb`, `reviews`); a word longer than [`MAX_WORD_CHARS`] characters is cut
//! to that length. A free-text word of a search is cut the same way, and matches a program when
//! it is a prefix of one of the program's words (`class` finds `ClassifyText`; `lassify` does
//! not). [`words`] is the one tokenizer, used for the programs and for the queries.
//!
//! **Entries.** A program with at most [`MAX_INDEXED_WORDS`] distinct words has one entry per
//! word: `TXT#<project>#<first character of the word>` / `<word>#<program id>` (the first
//! character spreads a project over partitions; a prefix read `begins_with(<word prefix>)` finds
//! every program having a word that starts with it). A program with more words has ONE entry in
//! its project's overflow partition `TXT#<project>#+` / `<program id>` instead: every indexed
//! search also reads that partition, so the matching rule does not depend on the cap, and the
//! cap bounds what a store writes. Entries are derived data: a search reads the record of
//! every candidate and checks it, so an entry left over (from a store that failed, a removed
//! word, a deleted program) can only cost a read, never a wrong result; a missing one would
//! hide a program, so entries are written before the record that needs them.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::backend::Item;
use crate::domain::{ProgramId, Project};
use crate::model::keys;
use crate::model::record::ProgramRecord;

/// Longest indexed word, in characters (longer words, in programs and queries, are cut).
pub const MAX_WORD_CHARS: usize = 40;
/// Most distinct words a program is indexed by word for; a program with more is in the overflow
/// partition (read by every indexed search) instead.
pub const MAX_INDEXED_WORDS: usize = 64;

/// Free-text weights: a word found in the signature counts 3, in a tag 2, in the description
/// 1.5, in any other string metadata value 1.
pub const WEIGHT_SIGNATURE: f64 = 3.0;
pub const WEIGHT_TAG: f64 = 2.0;
pub const WEIGHT_DESCRIPTION: f64 = 1.5;
pub const WEIGHT_OTHER: f64 = 1.0;

/// Metadata keys whose values are not free text (the service sets or interprets them).
pub const NOT_TEXT_KEYS: [&str; 6] = [
    "version",
    "project",
    "created_at",
    "rollback_from",
    "rollback_to",
    "rollback_timestamp",
];

/// The words of a text: lowercased, cut at every character that is not alphanumeric, each at
/// most [`MAX_WORD_CHARS`] characters.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| match w.char_indices().nth(MAX_WORD_CHARS) {
            Some((cut, _)) => w[..cut].to_owned(),
            None => w.to_owned(),
        })
        .collect()
}

/// The texts of a program with their weights (see the module doc).
pub fn fields(r: &ProgramRecord) -> Vec<(f64, &str)> {
    fields_of(r.signature.as_str(), &r.tags, &r.metadata)
}

/// [`fields`] from a program's parts (before its record exists).
pub fn fields_of<'a>(
    signature: &'a str,
    tags: &'a [String],
    metadata: &'a Map<String, Value>,
) -> Vec<(f64, &'a str)> {
    let mut out: Vec<(f64, &str)> = vec![(WEIGHT_SIGNATURE, signature)];
    out.extend(tags.iter().map(|t| (WEIGHT_TAG, t.as_str())));
    for (k, v) in metadata {
        match k.as_str() {
            "signature" | "tags" => {}
            k if NOT_TEXT_KEYS.contains(&k) => {}
            "description" => {
                if let Some(s) = v.as_str() {
                    out.push((WEIGHT_DESCRIPTION, s))
                }
            }
            _ => collect_strings(v, &mut |s| out.push((WEIGHT_OTHER, s))),
        }
    }
    out
}

fn collect_strings<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, f)),
        _ => {}
    }
}

/// Every distinct word of a program.
pub fn program_words(r: &ProgramRecord) -> BTreeSet<String> {
    fields(r).into_iter().flat_map(|(_, t)| words(t)).collect()
}

/// Free-text relevance of a record for `terms` (words, see [`words`]), or `None` when a term
/// matches nowhere (all terms must match).
///
/// `relevance_score = mean over terms of (w_best × exact) / 3`, where `w_best` is the weight of
/// the best field having a word the term is a prefix of (signature 3, tag 2, description 1.5,
/// any other string metadata 1) and `exact` is 1 when the term is that whole word, 0.7 when it
/// is only a prefix of it. The score is in (0, 1]; without free text every result scores 1.
pub fn relevance(r: &ProgramRecord, terms: &[String]) -> Option<f64> {
    if terms.is_empty() {
        return Some(1.0);
    }
    let fields: Vec<(f64, Vec<String>)> =
        fields(r).into_iter().map(|(w, t)| (w, words(t))).collect();
    let mut total = 0.0;
    for term in terms {
        let mut best: f64 = 0.0;
        for (w, ws) in &fields {
            for word in ws {
                if word.starts_with(term.as_str()) {
                    best = best.max(w * if word == term { 1.0 } else { 0.7 });
                }
            }
        }
        if best == 0.0 {
            return None;
        }
        total += best / WEIGHT_SIGNATURE;
    }
    Some(total / terms.len() as f64)
}

/// The first character of a word: which partition of its project holds its entries.
fn shard(word: &str) -> char {
    word.chars().next().expect("words are not empty")
}

/// The index entries of a program (see the module doc): one per distinct word, or the one
/// overflow entry when it has more than [`MAX_INDEXED_WORDS`].
pub fn index_items(r: &ProgramRecord) -> Vec<Item> {
    index_items_of(
        &r.project,
        &r.id,
        r.signature.as_str(),
        &r.tags,
        &r.metadata,
    )
}

/// [`index_items`] from a program's parts (before its record exists).
pub fn index_items_of(
    project: &Project,
    id: &ProgramId,
    signature: &str,
    tags: &[String],
    metadata: &Map<String, Value>,
) -> Vec<Item> {
    let words: BTreeSet<String> = fields_of(signature, tags, metadata)
        .into_iter()
        .flat_map(|(_, t)| words(t))
        .collect();
    if words.len() > MAX_INDEXED_WORDS {
        return vec![Item::new(keys::text_overflow_pk(project), id.to_string())];
    }
    words
        .iter()
        .map(|w| Item::new(keys::text_pk(project, shard(w)), keys::text_sk(w, id)))
        .collect()
}

/// Where the entries of words starting with `prefix` are: the partition and the sort key prefix.
pub fn prefix_range(project: &Project, prefix: &str) -> (String, String) {
    (keys::text_pk(project, shard(prefix)), prefix.to_owned())
}

/// The program an entry (word or overflow) names.
pub fn entry_program(item: &Item) -> Option<ProgramId> {
    let id = item.sk.rsplit('#').next()?;
    ProgramId::parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercase_alphanumeric_runs() {
        assert_eq!(words("qa.Answer"), vec!["qa", "answer"]);
        assert_eq!(
            words("  imdb-reviews, 2.0 "),
            vec!["imdb", "reviews", "2", "0"]
        );
        assert_eq!(words("Ünïcode Straße"), vec!["ünïcode", "straße"]);
        assert!(words("-- ..").is_empty());
        let long = "x".repeat(100);
        assert_eq!(words(&long), vec!["x".repeat(MAX_WORD_CHARS)]);
        let multibyte = "é".repeat(50);
        assert_eq!(words(&multibyte)[0].chars().count(), MAX_WORD_CHARS);
    }
}
