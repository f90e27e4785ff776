//! Fuzz targets (proptest): cursor decoding, the blob codec on arbitrary bytes, JSON body and URI
//! checks, metadata parsing, and whole `POST /programs` requests through the router. Each
//! target runs on its committed seed corpus (`tests/fuzz/seeds/<target>/`), on mutations of the
//! seeds and on arbitrary input.
//!
//! Bounded in the normal test run (proptest's default of 256 cases per target); longer by hand:
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test -p dspy-storage-tests --release --test it fuzz::
//! ```
//!
//! A failure is shrunk and saved by proptest under `tests/fuzz/proptest-regressions.txt`
//! (commit it: it is replayed first on every run).

use std::path::PathBuf;
use std::sync::OnceLock;

use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::backend::{Index, PageKey};
use dspy_storage_core::blob::codec::{sha256_hex, BlobInfo, Codec, Compression};
use dspy_storage_core::domain::NewMetadata;
use dspy_storage_core::paging::CursorKeys;
use dspy_storage_core::paging::{decode_cursor, encode_cursor};

/// The secret of the cursors these targets make (one per test process).
static KEYS: std::sync::LazyLock<CursorKeys> = std::sync::LazyLock::new(CursorKeys::ephemeral);
use dspy_storage_core::Error;
use dspy_storage_functions::extract::{check_json, check_uri};
use dspy_storage_tests::Client;
use proptest::prelude::*;
use serde_json::Value;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// A seed of `target` with a few random byte edits (flip, insert, delete) and maybe cut short.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6),
        prop::option::of(any::<usize>()),
    )
        .prop_map(|(mut s, edits, cut)| {
            for (pos, byte, kind) in edits {
                let at = if s.is_empty() { 0 } else { pos % s.len() };
                match kind {
                    0 if !s.is_empty() => s[at] ^= byte | 1,
                    1 => s.insert(at, byte),
                    _ if !s.is_empty() => {
                        s.remove(at);
                    }
                    _ => s.push(byte),
                }
            }
            if let Some(c) = cut {
                let len = s.len();
                s.truncate(c % (len + 1));
            }
            s
        })
}

/// Seeds, mutated seeds, or arbitrary bytes.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => mutated(target),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "signature",
            "S",
            "qa.Answer",
            "1.0.0",
            "latest",
            "project",
            "a/b",
            "..",
            "tags",
            "performance",
            "version",
            "score",
            "accuracy",
            "created_at",
            "2026-01-01T00:00:00Z",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "signature",
                    "version",
                    "project",
                    "tags",
                    "performance",
                    "examples_count",
                    "optimization_method",
                    "created_at",
                    "parent_id",
                    "description",
                    "x",
                    "",
                ])
                .prop_map(str::to_owned),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ----- the properties (also run on every seed by `seed_corpus_passes_every_target`) ------------

fn cursor_property(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (index, pk) in [
        (Index::Table, "SIG#default#S"),
        (Index::Gsi4, "PROJ#default"),
    ] {
        match decode_cursor(&KEYS, &OPERATOR, &text, index, pk) {
            Ok(key) => {
                // Accepted only for this listing: its partition, its key attributes.
                let pk_attr = if index == Index::Table {
                    "PK"
                } else {
                    index.pk_attr()
                };
                assert_eq!(key.get(pk_attr).map(String::as_str), Some(pk));
                assert_eq!(
                    decode_cursor(
                        &KEYS,
                        &OPERATOR,
                        &encode_cursor(&KEYS, &OPERATOR, index, pk, &key),
                        index,
                        pk
                    )
                    .unwrap(),
                    key
                );
            }
            Err(Error::InvalidInput { .. }) => {}
            Err(e) => panic!("cursor decoding answered {e:?}"),
        }
    }
}

fn blob_property(bytes: &[u8], compression: Compression, size: u64, encrypted: bool) {
    // The stored bytes' checksum matches (so decoding goes past it): the content is hostile.
    let info = BlobInfo {
        size,
        sha256: sha256_hex(bytes),
        stored_size: bytes.len() as u64,
        stored_sha256: sha256_hex(bytes),
        compression,
        key_id: encrypted.then(|| "local-0000000000000000".to_owned()),
        wrapped_key: None,
    };
    let mut codec = Codec::new(compression).with_key([7u8; 32]);
    codec
        .keyring
        .add(Some("local-0000000000000000".into()), [7u8; 32]);
    match codec.decode(bytes, &info) {
        Ok(json) => assert_eq!(sha256_hex(&json), info.sha256, "decoded bytes are verified"),
        Err(Error::Integrity(_)) => {}
        Err(e) => panic!("decoding hostile bytes answered {e:?}"),
    }
}

fn json_property(bytes: &[u8]) {
    if check_json(bytes).is_ok() {
        // Nothing our checker accepts is refused by the parser the handlers use.
        serde_json::from_slice::<Value>(bytes).expect("checked JSON parses");
    }
}

fn uri_property(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(uri) = text.parse::<http::Uri>() {
        if let Ok(params) = check_uri(&uri) {
            for (k, v) in params.0 {
                assert!(!k.is_empty() && !v.chars().any(|c| c.is_control() && c != '\t'));
            }
        }
    }
}

fn metadata_property(value: Value) {
    if let Ok(m) = NewMetadata::parse(value.clone(), chrono::Utc::now()) {
        assert!(m.tags.len() <= dspy_storage_core::domain::MAX_TAGS);
        assert_eq!(Value::Object(m.map.clone()), value);
        if let Some(score) = m.primary_score {
            assert!(score.is_finite());
        }
    }
}

struct App {
    client: Client,
    rt: tokio::runtime::Runtime,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // A fixed directory under target/ (a static is never dropped: a temp dir would stay
        // behind after every run), emptied at the start.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-store");
        let _ = std::fs::remove_dir_all(&dir);
        let storage =
            dspy_storage_core::open::embedded(&dir, Default::default()).expect("embedded store");
        let client = Client {
            router: dspy_storage_functions::app(dspy_storage_functions::AppState::new(
                std::sync::Arc::new(storage),
            )),
        };
        App { client, rt }
    })
}

fn store_property(body: Vec<u8>) {
    let app = app();
    let a = app.rt.block_on(app.client.request(
        http::Method::POST,
        "/programs",
        &[("content-type", "application/json")],
        body,
    ));
    let status = a.status.as_u16();
    assert!(
        status == 201 || status == 409 || (400..500).contains(&status),
        "POST /programs answered {status}: {}",
        String::from_utf8_lossy(&a.body)
    );
    if status != 201 {
        let v = a.json();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{v}"
        );
    }
}

// ----- the targets -------------------------------------------------------------------------------

#[test]
fn seed_corpus_passes_every_target() {
    let mut n = 0;
    for s in seeds("cursor") {
        cursor_property(&s);
        n += 1;
    }
    for s in seeds("json").into_iter().chain(seeds("store_body")) {
        json_property(&s);
        n += 1;
    }
    for s in seeds("uri") {
        uri_property(&s);
        n += 1;
    }
    for s in seeds("query") {
        query_property(&s);
        n += 1;
    }
    // The query seeds are not vacuous: a valid one parses, the broken one names the position.
    let now = chrono::Utc::now();
    assert!(dspy_storage_core::query::parse::parse_terms(
        "signature:qa.Answer performance>=0.8 tag:production",
        now
    )
    .is_ok());
    let e = dspy_storage_core::query::parse::parse_terms("performance>", now).unwrap_err();
    assert!(e.to_string().contains("position 12"), "{e}");
    for s in seeds("metadata") {
        if let Ok(v) = serde_json::from_slice(&s) {
            metadata_property(v);
        }
        n += 1;
    }
    for s in seeds("store_body") {
        store_property(s);
        n += 1;
    }
    for s in seeds("blob") {
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Lz4,
            Compression::None,
        ] {
            for size in [0, 1, s.len() as u64, 1 << 40, u64::MAX] {
                blob_property(&s, c, size, false);
                blob_property(&s, c, size, true);
            }
        }
        n += 1;
    }
    println!("{n} seeds");
}

#[test]
fn a_valid_cursor_round_trips() {
    let mut key = PageKey::new();
    key.insert("PK".into(), "SIG#default#S".into());
    key.insert("SK".into(), "VER#1".into());
    let c = encode_cursor(&KEYS, &OPERATOR, Index::Table, "SIG#default#S", &key);
    assert_eq!(
        decode_cursor(&KEYS, &OPERATOR, &c, Index::Table, "SIG#default#S").unwrap(),
        key
    );
    assert!(decode_cursor(&KEYS, &OPERATOR, &c, Index::Table, "SIG#other#S").is_err());
    assert!(decode_cursor(&KEYS, &OPERATOR, &c, Index::Gsi1, "SIG#default#S").is_err());
    // Signed: the same cursor under another secret, or one byte changed, is refused.
    assert!(decode_cursor(
        &CursorKeys::ephemeral(),
        &OPERATOR,
        &c,
        Index::Table,
        "SIG#default#S"
    )
    .is_err());
    let mut b = c.clone().into_bytes();
    b[3] ^= 1;
    assert!(decode_cursor(
        &KEYS,
        &OPERATOR,
        &String::from_utf8_lossy(&b),
        Index::Table,
        "SIG#default#S"
    )
    .is_err());
}

proptest! {
    // Failures are shrunk and kept here (replayed first on every run).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("fuzz/proptest-regressions.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_cursor_decoding(bytes in input("cursor")) {
        cursor_property(&bytes);
    }

    #[test]
    fn fuzz_blob_codec_decode(
        bytes in prop_oneof![input("blob"), Just(Vec::new())],
        c in prop::sample::select(vec![Compression::Zstd, Compression::Gzip, Compression::Lz4, Compression::None]),
        size in prop_oneof![0u64..4096, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()],
        encrypted: bool,
    ) {
        blob_property(&bytes, c, size, encrypted);
    }

    #[test]
    fn fuzz_json_body_check(bytes in prop_oneof![input("json"), input("store_body")]) {
        json_property(&bytes);
    }

    #[test]
    fn fuzz_uri_check(bytes in input("uri")) {
        uri_property(&bytes);
    }

    #[test]
    fn fuzz_metadata_parsing(value in json_value()) {
        metadata_property(value);
    }

    #[test]
    fn fuzz_store_requests(body in prop_oneof![
        input("store_body"),
        json_value().prop_map(|m| serde_json::json!({"program": {"p": 1}, "metadata": m}).to_string().into_bytes()),
    ]) {
        store_property(body);
    }

    #[test]
    fn fuzz_query_parser(bytes in input("query")) {
        query_property(&bytes);
    }
}

/// The query language: parsing never panics; a refusal is an invalid-input error, and a syntax
/// error says at which position; through `GET /search` every query is a 200 or a 400 in the
/// error shape (never a 5xx).
fn query_property(bytes: &[u8]) {
    let q = String::from_utf8_lossy(bytes);
    match dspy_storage_core::query::parse::parse_terms(&q, chrono::Utc::now()) {
        Ok(_) => {}
        Err(dspy_storage_core::Error::InvalidInput { message, .. }) => {
            if message.contains("syntax") {
                assert!(message.contains("position"), "{q:?}: {message}");
            }
        }
        Err(e) => panic!("{q:?}: parse error of the wrong kind: {e:?}"),
    }
    let app = app();
    let mut uri = String::from("/search?q=");
    for b in q.as_bytes() {
        if b.is_ascii_alphanumeric() {
            uri.push(*b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    let a = app.rt.block_on(app.client.get(&uri));
    let status = a.status.as_u16();
    assert!(
        status == 200 || (400..500).contains(&status),
        "GET /search answered {status} for {q:?}: {}",
        String::from_utf8_lossy(&a.body)
    );
    if status != 200 {
        let v = a.json();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{v}"
        );
    }
}

#[test]
fn the_store_target_really_stores() {
    // The store target is not vacuous: a valid seed is accepted.
    let app = app();
    let body = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/store_body/minimal.json"),
    )
    .unwrap();
    let a = app.rt.block_on(app.client.request(
        http::Method::POST,
        "/programs",
        &[("content-type", "application/json")],
        body,
    ));
    assert!(
        matches!(a.status.as_u16(), 201 | 409),
        "{}",
        String::from_utf8_lossy(&a.body)
    );
}
