//! The conformance suite of the two capability traits: ONE set of cases that every backend runs
//! ([`run`]), so the embedded backend and the AWS one (DynamoDB + S3) are held to the same
//! behaviour, like object_store's `integration` module. The embedded backend runs it in its unit
//! tests, the AWS backend against LocalStack (`AWS_ENDPOINT_URL`); a new backend runs it too.
//!
//! Covered: every [`ItemStore`] primitive (conditional transactions and the index of the operation
//! that failed, deletes, table ranges in both directions, every GSI, paging with small limits,
//! batch puts, batch reads and scans) and every [`BlobStore`] primitive (round trips, overwrite, missing keys,
//! delete, copy, listing by prefix with paging, `exists`, the archive tier: archive, tier,
//! restore request, unarchive; and multipart uploads). Each case names the backend in every
//! failure message.
//!
//! Compiled for the core's tests and with the `conformance` feature (the integration tests).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    BlobStore, BlobTier, Condition, Index, Item, ItemStore, PageKey, Query, SkRange, WriteOp,
};
use crate::blob::codec::sha256_hex;
use crate::error::{Error, Result};

/// A backend under test: its two stores (fresh: no item, no blob) and a label for messages.
pub struct Backend<'a> {
    pub label: &'a str,
    pub items: &'a dyn ItemStore,
    pub blobs: &'a dyn BlobStore,
    /// The archive tier is local and a restore completes within the request (embedded): the blob
    /// is back in the standard tier when `request_restore` returns, and `unarchive` needs no
    /// restore first. Otherwise (S3) a restore passes through `Restoring`/`Restored`.
    pub instant_restore: bool,
}

/// Runs every case against `be`, in turn (each panics with the backend and the case named).
pub async fn run(be: &Backend<'_>) {
    items_get_missing_and_conditional_puts(be).await;
    items_failed_transaction_applies_nothing(be).await;
    items_delete(be).await;
    items_query_table_ranges_both_directions(be).await;
    items_query_each_gsi(be).await;
    items_query_paging_small_limits(be).await;
    items_batch_put_60_and_scan_paging(be).await;
    items_binary_attributes(be).await;
    items_counter_add_set_remove(be).await;
    blobs_round_trip_missing_delete_copy(be).await;
    blobs_list_by_prefix_with_paging(be).await;
    blobs_exists(be).await;
    blobs_archive_tier_restore(be).await;
    blobs_multipart(be).await;
}

/// [`WriteOp::Add`]: creates a missing item, adds to numbers (a missing one counts as 0), sets
/// strings and removes attributes (a missing one is ignored), in a transaction; the numbers
/// stay addable.
pub async fn items_counter_add_set_remove(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    let op = |add: Vec<(&str, i64)>, set: Vec<(&str, &str)>, remove: Vec<&str>| WriteOp::Add {
        pk: "CNT#1".into(),
        sk: "C".into(),
        add: add.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        set: set
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        remove: remove.into_iter().map(str::to_owned).collect(),
    };
    s.transact(vec![op(
        vec![("n_a", 2), ("n_old", 5)],
        vec![("name", "x")],
        vec!["n_missing"],
    )])
    .await
    .unwrap();
    let item = s.get("CNT#1", "C").await.unwrap().expect("created");
    assert_eq!(item.get("n_a"), Some("2"), "{w} {item:?}");
    assert_eq!(item.get("n_old"), Some("5"), "{w} {item:?}");
    assert_eq!(item.get("name"), Some("x"), "{w} {item:?}");
    s.transact(vec![op(
        vec![("n_a", -3), ("n_b", 1)],
        vec![("name", "y")],
        vec!["n_old", "n_never"],
    )])
    .await
    .unwrap();
    let item = s.get("CNT#1", "C").await.unwrap().expect("still there");
    let expected = Item::new("CNT#1", "C")
        .with("n_a", "-1")
        .with("n_b", "1")
        .with("name", "y");
    assert_eq!(item, expected, "{w}");
    // Only removing: the item stays, without the attribute.
    s.transact(vec![op(vec![], vec![], vec!["n_b"])])
        .await
        .unwrap();
    let item = s.get("CNT#1", "C").await.unwrap().expect("still there");
    assert_eq!(item.get("n_b"), None, "{w} {item:?}");
    assert_eq!(item.get("n_a"), Some("-1"), "{w} {item:?}");
}

/// Binary attributes (`b_…`, base64 in an [`Item`]) read back as the text they were written as,
/// through a transaction, a batch write, a read, a batch read, a query and a scan; a `b_` value
/// that is not base64 stays text.
pub async fn items_binary_attributes(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let text = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    };
    let a = Item::new("T#bin", "a")
        .with("b_payload", text.clone())
        .with("b_plain", "not base64!")
        .with("n_count", "3");
    let b = Item::new("T#bin", "b").with("b_payload", "");
    put(s, a.clone()).await;
    s.batch_put(vec![b.clone()]).await.unwrap();
    assert_eq!(
        s.get("T#bin", "a").await.unwrap(),
        Some(a.clone()),
        "{w} get"
    );
    let keys = [
        ("T#bin".to_owned(), "a".to_owned()),
        ("T#bin".to_owned(), "b".to_owned()),
    ];
    let many = s.get_many(&keys).await.unwrap();
    assert_eq!(many[0].as_ref(), Some(&a), "{w} get_many");
    let (listed, _) = query_all(s, &Query::new(Index::Table, "T#bin")).await;
    assert_eq!(listed[0], a, "{w} query");
    assert_eq!(listed.len(), 2, "{w} query");
    assert_eq!(
        listed[1].get("b_payload").unwrap_or_default(),
        "",
        "{w} an empty binary value"
    );
}

// ----- helpers ------------------------------------------------------------------------------------

fn expect_err<T: std::fmt::Debug>(
    ctx: &str,
    result: Result<T>,
    matches: impl Fn(&Error) -> bool,
    what: &str,
) {
    match result {
        Err(e) if matches(&e) => {}
        other => panic!("{ctx}: expected {what}, got {other:?}"),
    }
}

fn expect_condition_failed(ctx: &str, result: Result<()>, expected: &[usize]) {
    match result {
        Err(Error::ConditionFailed { ops }) => {
            assert_eq!(ops, expected, "{ctx}: failed operation indexes")
        }
        other => panic!("{ctx}: expected ConditionFailed {{ ops: {expected:?} }}, got {other:?}"),
    }
}

/// Reads every page of a query, following `next`; returns the items and each page's size.
async fn query_all(items: &dyn ItemStore, query: &Query) -> (Vec<Item>, Vec<usize>) {
    let mut out = Vec::new();
    let mut pages = Vec::new();
    let mut q = query.clone();
    for _ in 0..10_000 {
        let page = items.query(&q).await.expect("query");
        pages.push(page.items.len());
        out.extend(page.items);
        match page.next {
            Some(next) => q.start = Some(next),
            None => return (out, pages),
        }
    }
    panic!("query paging did not end: {query:?}");
}

/// Index reads are eventually consistent on DynamoDB: retries the whole (paged) read until it
/// returns `expected` items or 20 seconds have passed, then returns the last answer.
async fn query_index(items: &dyn ItemStore, query: &Query, expected: usize) -> Vec<Item> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (found, _) = query_all(items, query).await;
        if found.len() == expected || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sks(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.sk.clone()).collect()
}

fn pks(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.pk.clone()).collect()
}

async fn put(items: &dyn ItemStore, item: Item) {
    items
        .transact(vec![WriteOp::put(item, Condition::None)])
        .await
        .expect("unconditional put");
}

pub async fn items_get_missing_and_conditional_puts(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    assert_eq!(s.get("T#missing", "S").await.unwrap(), None, "{w} missing");

    let a1 = Item::new("T#a", "S").with("data", "one").with("rev", "1");
    s.transact(vec![WriteOp::put(a1.clone(), Condition::NotExists)])
        .await
        .unwrap_or_else(|e| panic!("{w} NotExists on a new item: {e:?}"));
    assert_eq!(s.get("T#a", "S").await.unwrap(), Some(a1.clone()), "{w}");
    // Same partition, other sort key: a different item.
    assert_eq!(s.get("T#a", "S2").await.unwrap(), None, "{w}");

    let a_other = Item::new("T#a", "S").with("data", "two");
    expect_condition_failed(
        &format!("{w} NotExists on an existing item"),
        s.transact(vec![WriteOp::put(a_other.clone(), Condition::NotExists)])
            .await,
        &[0],
    );
    assert_eq!(s.get("T#a", "S").await.unwrap(), Some(a1.clone()), "{w}");

    expect_condition_failed(
        &format!("{w} Exists on a missing item"),
        s.transact(vec![WriteOp::put(
            Item::new("T#b", "S").with("data", "x"),
            Condition::Exists,
        )])
        .await,
        &[0],
    );
    assert_eq!(s.get("T#b", "S").await.unwrap(), None, "{w}");

    let a2 = Item::new("T#a", "S").with("data", "two").with("rev", "2");
    s.transact(vec![WriteOp::put(a2.clone(), Condition::Exists)])
        .await
        .unwrap_or_else(|e| panic!("{w} Exists on an existing item: {e:?}"));
    assert_eq!(s.get("T#a", "S").await.unwrap(), Some(a2.clone()), "{w}");

    // Compare-and-set on an attribute.
    expect_condition_failed(
        &format!("{w} AttrEquals with a stale value"),
        s.transact(vec![WriteOp::put(
            a1.clone(),
            Condition::AttrEquals("rev".into(), "1".into()),
        )])
        .await,
        &[0],
    );
    expect_condition_failed(
        &format!("{w} AttrEquals on an attribute the item lacks"),
        s.transact(vec![WriteOp::put(
            a1.clone(),
            Condition::AttrEquals("nope".into(), "1".into()),
        )])
        .await,
        &[0],
    );
    expect_condition_failed(
        &format!("{w} AttrEquals on a missing item"),
        s.transact(vec![WriteOp::put(
            Item::new("T#c", "S").with("rev", "1"),
            Condition::AttrEquals("rev".into(), "0".into()),
        )])
        .await,
        &[0],
    );
    assert_eq!(s.get("T#a", "S").await.unwrap(), Some(a2.clone()), "{w}");
    assert_eq!(s.get("T#c", "S").await.unwrap(), None, "{w}");

    // A put replaces the whole item: attributes not in the new item are gone.
    let a3 = Item::new("T#a", "S").with("rev", "3");
    s.transact(vec![WriteOp::put(
        a3.clone(),
        Condition::AttrEquals("rev".into(), "2".into()),
    )])
    .await
    .unwrap_or_else(|e| panic!("{w} AttrEquals with the current value: {e:?}"));
    let got = s.get("T#a", "S").await.unwrap().expect("item");
    assert_eq!(got, a3, "{w} put replaces the item");
    assert_eq!(got.data(), None, "{w} old attribute removed");

    // No condition: creates and overwrites.
    let d = Item::new("T#d", "S").with("v", "x");
    put(s, d.clone()).await;
    put(s, d.clone().with("v", "y")).await;
    assert_eq!(
        s.get("T#d", "S").await.unwrap(),
        Some(d.with("v", "y")),
        "{w}"
    );

    // Attribute values survive byte for byte (unicode, JSON, empty strings, long text).
    let odd = Item::new("T#odd ü/#", "S#ü 1")
        .with("data", r#"{"k": "välue \"quoted\"", "n": [1, 2]}"#)
        .with("empty", "")
        .with("long", "x".repeat(50_000));
    put(s, odd.clone()).await;
    assert_eq!(s.get("T#odd ü/#", "S#ü 1").await.unwrap(), Some(odd), "{w}");

    // A check that holds writes nothing; one that fails reports its index.
    s.transact(vec![WriteOp::Check {
        pk: "T#a".into(),
        sk: "S".into(),
        condition: Condition::Exists,
    }])
    .await
    .unwrap_or_else(|e| panic!("{w} passing check: {e:?}"));
    assert_eq!(s.get("T#a", "S").await.unwrap(), Some(a3), "{w}");
    expect_condition_failed(
        &format!("{w} failing check"),
        s.transact(vec![WriteOp::Check {
            pk: "T#zz".into(),
            sk: "S".into(),
            condition: Condition::Exists,
        }])
        .await,
        &[0],
    );
    assert_eq!(s.get("T#zz", "S").await.unwrap(), None, "{w}");
}

pub async fn items_failed_transaction_applies_nothing(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    let head = Item::new("X#sig", "HEAD")
        .with("rev", "7")
        .with("data", "head");
    let doomed = Item::new("X#old", "S").with("data", "old");
    put(s, head.clone()).await;
    put(s, doomed.clone()).await;

    let ops = |rev: &str| {
        vec![
            WriteOp::put(
                Item::new("X#prog", "PROG").with("data", "p"),
                Condition::NotExists,
            ),
            WriteOp::Check {
                pk: "X#old".into(),
                sk: "S".into(),
                condition: Condition::Exists,
            },
            WriteOp::put(
                Item::new("X#sig", "VER#1").with("id", "p"),
                Condition::NotExists,
            ),
            WriteOp::put(
                head.clone().with("rev", "8"),
                Condition::AttrEquals("rev".into(), rev.into()),
            ),
            WriteOp::delete("X#old", "S2", Condition::None),
            WriteOp::put(Item::new("X#tag", "t1").with("id", "p"), Condition::None),
        ]
    };
    // The compare-and-set at index 3 fails: nothing of the transaction is applied.
    expect_condition_failed(
        &format!("{w} stale compare-and-set in a transaction"),
        s.transact(ops("6")).await,
        &[3],
    );
    assert_eq!(
        s.get("X#prog", "PROG").await.unwrap(),
        None,
        "{w} op 0 applied"
    );
    assert_eq!(
        s.get("X#sig", "VER#1").await.unwrap(),
        None,
        "{w} op 2 applied"
    );
    assert_eq!(
        s.get("X#sig", "HEAD").await.unwrap(),
        Some(head.clone()),
        "{w} op 3"
    );
    assert_eq!(
        s.get("X#tag", "t1").await.unwrap(),
        None,
        "{w} op 5 applied"
    );
    assert_eq!(
        s.get("X#old", "S").await.unwrap(),
        Some(doomed.clone()),
        "{w}"
    );

    // A failing condition at index 0 is reported as 0 and nothing else applies either.
    let mut first_fails = ops("7");
    first_fails[0] = WriteOp::put(
        Item::new("X#old", "S").with("data", "clobbered"),
        Condition::NotExists,
    );
    first_fails.remove(1); // one operation per item in a transaction
    expect_condition_failed(
        &format!("{w} first operation fails"),
        s.transact(first_fails).await,
        &[0],
    );
    assert_eq!(
        s.get("X#sig", "HEAD").await.unwrap(),
        Some(head.clone()),
        "{w}"
    );
    assert_eq!(s.get("X#sig", "VER#1").await.unwrap(), None, "{w}");
    assert_eq!(s.get("X#old", "S").await.unwrap(), Some(doomed), "{w}");

    // With the right revision the same transaction applies completely.
    s.transact(ops("7"))
        .await
        .unwrap_or_else(|e| panic!("{w} valid transaction: {e:?}"));
    assert!(s.get("X#prog", "PROG").await.unwrap().is_some(), "{w}");
    assert!(s.get("X#sig", "VER#1").await.unwrap().is_some(), "{w}");
    assert_eq!(
        s.get("X#sig", "HEAD").await.unwrap(),
        Some(head.clone().with("rev", "8")),
        "{w}"
    );
    assert!(s.get("X#tag", "t1").await.unwrap().is_some(), "{w}");

    // Replaying it now fails on the two NotExists puts and on the stale revision.
    match s.transact(ops("7")).await {
        Err(Error::ConditionFailed { ops }) => {
            assert!(!ops.is_empty(), "{w} failed ops reported");
            assert!(
                ops.iter().all(|i| [0, 2, 3].contains(i)),
                "{w} only failing conditions are reported: {ops:?}"
            );
        }
        other => panic!("{w} replayed transaction: expected ConditionFailed, got {other:?}"),
    }
}

pub async fn items_delete(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    let a = Item::new("D#a", "S").with("rev", "1");
    put(s, a.clone()).await;
    put(s, Item::new("D#a", "S2")).await;

    // Conditional deletes.
    expect_condition_failed(
        &format!("{w} delete with a stale revision"),
        s.transact(vec![WriteOp::delete(
            "D#a",
            "S",
            Condition::AttrEquals("rev".into(), "0".into()),
        )])
        .await,
        &[0],
    );
    assert_eq!(s.get("D#a", "S").await.unwrap(), Some(a), "{w}");
    s.transact(vec![WriteOp::delete(
        "D#a",
        "S",
        Condition::AttrEquals("rev".into(), "1".into()),
    )])
    .await
    .unwrap_or_else(|e| panic!("{w} delete with the current revision: {e:?}"));
    assert_eq!(s.get("D#a", "S").await.unwrap(), None, "{w} deleted");
    assert!(
        s.get("D#a", "S2").await.unwrap().is_some(),
        "{w} only that item is deleted"
    );

    // Deleting a missing item: fine without a condition, refused with Exists.
    s.transact(vec![WriteOp::delete("D#a", "S", Condition::None)])
        .await
        .unwrap_or_else(|e| panic!("{w} unconditional delete of a missing item: {e:?}"));
    expect_condition_failed(
        &format!("{w} delete with Exists of a missing item"),
        s.transact(vec![WriteOp::delete("D#a", "S", Condition::Exists)])
            .await,
        &[0],
    );
    s.transact(vec![WriteOp::delete("D#a", "S2", Condition::Exists)])
        .await
        .unwrap_or_else(|e| panic!("{w} delete with Exists: {e:?}"));
    assert_eq!(s.get("D#a", "S2").await.unwrap(), None, "{w}");

    // A deleted item is gone from queries and can be created again with NotExists.
    let (left, _) = query_all(s, &Query::new(Index::Table, "D#a")).await;
    assert!(left.is_empty(), "{w} query after delete: {left:?}");
    s.transact(vec![WriteOp::put(
        Item::new("D#a", "S"),
        Condition::NotExists,
    )])
    .await
    .unwrap_or_else(|e| panic!("{w} re-create after delete: {e:?}"));
}

pub async fn items_query_table_ranges_both_directions(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    let a: Vec<String> = (1..=10).map(|i| format!("a#{i:02}")).collect();
    let b: Vec<String> = (1..=5).map(|i| format!("b#{i:02}")).collect();
    for sk in a.iter().chain(&b) {
        put(s, Item::new("Q#p", sk).with("data", format!("v{sk}"))).await;
    }
    // Neighbouring partitions must not leak in.
    put(s, Item::new("Q#p2", "a#05")).await;
    put(s, Item::new("Q#", "a#05")).await;
    put(s, Item::new("Q#pp", "a#05")).await;

    let all: Vec<String> = a.iter().chain(&b).cloned().collect();
    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();
    let cases: Vec<(&str, SkRange, Vec<String>)> = vec![
        ("all", SkRange::All, all.clone()),
        (
            "begins_with a#",
            SkRange::BeginsWith("a#".into()),
            a.clone(),
        ),
        (
            "begins_with b#0",
            SkRange::BeginsWith("b#0".into()),
            b.clone(),
        ),
        (
            "begins_with a#1",
            SkRange::BeginsWith("a#1".into()),
            vec!["a#10".into()],
        ),
        ("begins_with c", SkRange::BeginsWith("c".into()), vec![]),
        (
            "between a#03 a#06",
            SkRange::Between("a#03".into(), "a#06".into()),
            a[2..6].to_vec(),
        ),
        (
            "between a#09 b#02",
            SkRange::Between("a#09".into(), "b#02".into()),
            vec!["a#09".into(), "a#10".into(), "b#01".into(), "b#02".into()],
        ),
        (
            "between a#04 a#04",
            SkRange::Between("a#04".into(), "a#04".into()),
            vec!["a#04".into()],
        ),
        ("gte b#03", SkRange::Gte("b#03".into()), b[2..].to_vec()),
        ("gte a#", SkRange::Gte("a#".into()), all.clone()),
        ("gte z", SkRange::Gte("z".into()), vec![]),
        ("lte a#02", SkRange::Lte("a#02".into()), a[..2].to_vec()),
        ("lte b", SkRange::Lte("b".into()), a.clone()),
        ("lte a", SkRange::Lte("a".into()), vec![]),
    ];
    for (name, range, expected) in cases {
        for forward in [true, false] {
            let q = Query::new(Index::Table, "Q#p")
                .sk(range.clone())
                .forward(forward);
            let (got, _) = query_all(s, &q).await;
            let want = if forward {
                expected.clone()
            } else {
                rev(&expected)
            };
            assert_eq!(sks(&got), want, "{w} {name} forward={forward}");
            assert!(got.iter().all(|i| i.pk == "Q#p"), "{w} {name} partition");
            for i in &got {
                assert_eq!(i.data(), Some(format!("v{}", i.sk).as_str()), "{w} attrs");
            }
        }
    }
    // An empty partition is an empty page without a continuation.
    let page = s.query(&Query::new(Index::Table, "Q#none")).await.unwrap();
    assert!(page.items.is_empty() && page.next.is_none(), "{w} {page:?}");
}

pub async fn items_query_each_gsi(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    for (n, index) in Index::GSIS.into_iter().enumerate() {
        let (pk_attr, sk_attr) = (index.pk_attr(), index.sk_attr());
        let part = format!("G{n}#part");
        // Index sort keys run against the table keys, so index order is visible.
        let mut items = Vec::new();
        for i in 0..8usize {
            items.push(
                Item::new(format!("G{n}#item{i}"), "S")
                    .with(pk_attr, part.clone())
                    .with(sk_attr, format!("k#{:02}", 20 - i))
                    .with("data", format!("{i}")),
            );
        }
        // Another partition of the same index, and items that are not in the index.
        items.push(
            Item::new(format!("G{n}#other"), "S")
                .with(pk_attr, format!("{part}2"))
                .with(sk_attr, "k#15"),
        );
        items.push(Item::new(format!("G{n}#sparse"), "S").with("data", "none"));
        items.push(
            Item::new(format!("G{n}#pkonly"), "S")
                .with(pk_attr, "unrelated")
                .with("x", "1"),
        );
        // The table partition key value in another index's attribute: not in this one.
        let other = Index::GSIS[(n + 1) % 4];
        items.push(
            Item::new(format!("G{n}#otherindex"), "S")
                .with(other.pk_attr(), part.clone())
                .with(other.sk_attr(), "k#14"),
        );
        for item in items {
            put(s, item).await;
        }

        let expected: Vec<String> = (0..8).rev().map(|i| format!("G{n}#item{i}")).collect();
        let got = query_index(s, &Query::new(index, part.clone()), 8).await;
        assert_eq!(pks(&got), expected, "{w} {} all", index.name());
        for item in &got {
            assert_eq!(item.sk, "S", "{w} full item returned");
            assert_eq!(item.get(pk_attr), Some(part.as_str()), "{w}");
            assert!(item.data().is_some(), "{w} attributes projected: {item:?}");
        }
        // Keys only: the same items in the same order, with at least their keys.
        let keys = query_index(s, &Query::new(index, part.clone()).keys_only(), 8).await;
        assert_eq!(pks(&keys), expected, "{w} {} keys only", index.name());
        for (k, item) in keys.iter().zip(&got) {
            assert_eq!(k.sk, item.sk, "{w}");
            assert_eq!(k.get(pk_attr), item.get(pk_attr), "{w} {k:?}");
            assert_eq!(k.get(sk_attr), item.get(sk_attr), "{w} {k:?}");
        }
        let got = query_index(s, &Query::new(index, part.clone()).forward(false), 8).await;
        assert_eq!(
            pks(&got),
            expected.iter().rev().cloned().collect::<Vec<_>>(),
            "{w} {} backwards",
            index.name()
        );
        // Ranges on the index sort key (items 0..8 have k#20..k#13).
        let ranges: Vec<(SkRange, Vec<usize>)> = vec![
            (SkRange::BeginsWith("k#1".into()), vec![7, 6, 5, 4, 3, 2, 1]),
            (
                SkRange::Between("k#14".into(), "k#16".into()),
                vec![6, 5, 4],
            ),
            (SkRange::Gte("k#18".into()), vec![2, 1, 0]),
            (SkRange::Lte("k#14".into()), vec![7, 6]),
        ];
        for (range, ids) in ranges {
            let want: Vec<String> = ids.iter().map(|i| format!("G{n}#item{i}")).collect();
            let q = Query::new(index, part.clone()).sk(range.clone());
            let got = query_index(s, &q, want.len()).await;
            assert_eq!(pks(&got), want, "{w} {} {range:?}", index.name());
            let got = query_index(s, &q.forward(false), want.len()).await;
            let back: Vec<String> = want.iter().rev().cloned().collect();
            assert_eq!(pks(&got), back, "{w} {} {range:?} backwards", index.name());
        }
        // An item with only the index partition key attribute is not in the index.
        let got = query_index(s, &Query::new(index, "unrelated"), 0).await;
        assert!(
            got.is_empty(),
            "{w} {} half-keyed item indexed: {got:?}",
            index.name()
        );
        let got = query_index(s, &Query::new(index, format!("{part}2")), 1).await;
        assert_eq!(
            pks(&got),
            vec![format!("G{n}#other")],
            "{w} {}",
            index.name()
        );

        // Removing the index attributes takes an item out of the index.
        put(s, Item::new(format!("G{n}#item0"), "S").with("data", "0")).await;
        let got = query_index(s, &Query::new(index, part.clone()), 7).await;
        assert_eq!(
            pks(&got),
            expected[..7].to_vec(),
            "{w} {} sparse",
            index.name()
        );
    }
}

pub async fn items_query_paging_small_limits(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    let table_sks: Vec<String> = (0..10).map(|i| format!("s#{i:02}")).collect();
    for sk in &table_sks {
        put(s, Item::new("PG#p", sk).with("data", sk.clone())).await;
    }
    // An index partition with ties on the index sort key (told apart by the table key).
    let mut index_items = Vec::new();
    for i in 0..11usize {
        let isk = if i == 4 || i == 5 || i == 6 {
            "k#tie".to_owned()
        } else {
            format!("k#{:02}", 30 - i)
        };
        let item = Item::new(format!("PG#i{i:02}"), format!("x{}", i % 3))
            .with("GSI2PK", "PGIDX")
            .with("GSI2SK", isk);
        put(s, item.clone()).await;
        index_items.push(item);
    }
    let index_all = query_index(s, &Query::new(Index::Gsi2, "PGIDX"), 11).await;
    assert_eq!(index_all.len(), 11, "{w} index items visible");

    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();
    for limit in [1usize, 2, 3, 4, 9, 10, 11, 100] {
        for forward in [true, false] {
            // Table, whole partition.
            let q = Query::new(Index::Table, "PG#p")
                .limit(limit)
                .forward(forward);
            let (got, pages) = query_all(s, &q).await;
            let want = if forward {
                table_sks.clone()
            } else {
                rev(&table_sks)
            };
            assert_eq!(sks(&got), want, "{w} table limit={limit} forward={forward}");
            assert!(
                pages.iter().all(|n| *n <= limit),
                "{w} pages over the limit {limit}: {pages:?}"
            );
            // Table, a range.
            let q = Query::new(Index::Table, "PG#p")
                .sk(SkRange::Between("s#02".into(), "s#08".into()))
                .limit(limit)
                .forward(forward);
            let (got, pages) = query_all(s, &q).await;
            let mid = table_sks[2..9].to_vec();
            let want = if forward { mid.clone() } else { rev(&mid) };
            assert_eq!(sks(&got), want, "{w} range limit={limit} forward={forward}");
            assert!(pages.iter().all(|n| *n <= limit), "{w} {pages:?}");

            // Index: every item exactly once, in index order.
            let q = Query::new(Index::Gsi2, "PGIDX")
                .limit(limit)
                .forward(forward);
            let (got, pages) = query_all(s, &q).await;
            assert!(pages.iter().all(|n| *n <= limit), "{w} {pages:?}");
            let keys: Vec<(String, String)> =
                got.iter().map(|i| (i.pk.clone(), i.sk.clone())).collect();
            let unique: BTreeSet<&(String, String)> = keys.iter().collect();
            assert_eq!(
                unique.len(),
                keys.len(),
                "{w} index limit={limit} forward={forward}: duplicates {keys:?}"
            );
            let want: BTreeSet<(String, String)> = index_items
                .iter()
                .map(|i| (i.pk.clone(), i.sk.clone()))
                .collect();
            assert_eq!(
                unique.into_iter().cloned().collect::<BTreeSet<_>>(),
                want,
                "{w} index limit={limit} forward={forward}: every item once"
            );
            let isks: Vec<&str> = got.iter().map(|i| i.get("GSI2SK").unwrap()).collect();
            let mut sorted = isks.clone();
            sorted.sort_unstable();
            if !forward {
                sorted.reverse();
            }
            assert_eq!(
                isks, sorted,
                "{w} index order limit={limit} forward={forward}"
            );
        }
    }
}

pub async fn items_batch_put_60_and_scan_paging(be: &Backend<'_>) {
    let w = be.label;
    let s = be.items;
    // What the earlier cases left in the table: the scans below must return it too.
    let mut all = scan_keys(s, 1000, w).await;
    // One pre-existing item that the batch overwrites.
    put(
        s,
        Item::new("BATCH", "n#007")
            .with("data", "old")
            .with("stale", "1"),
    )
    .await;
    let items: Vec<Item> = (0..60)
        .map(|i| {
            let mut item = Item::new("BATCH", format!("n#{i:03}"))
                .with("data", format!("{{\"i\":{i}}}"))
                .with("i", i.to_string());
            if i % 2 == 0 {
                item = item
                    .with("GSI3PK", "BATCHIDX")
                    .with("GSI3SK", format!("{i:03}"));
            }
            item
        })
        .collect();
    s.batch_put(items.clone())
        .await
        .unwrap_or_else(|e| panic!("{w} batch_put of 60: {e:?}"));
    let (got, _) = query_all(s, &Query::new(Index::Table, "BATCH").limit(1000)).await;
    assert_eq!(got, items, "{w} every batch item stored exactly as given");
    for item in &items {
        assert_eq!(
            s.get(&item.pk, &item.sk).await.unwrap().as_ref(),
            Some(item),
            "{w}"
        );
    }
    let indexed = query_index(s, &Query::new(Index::Gsi3, "BATCHIDX"), 30).await;
    let want: Vec<String> = (0..60).step_by(2).map(|i| format!("n#{i:03}")).collect();
    assert_eq!(sks(&indexed), want, "{w} batch items are indexed");

    // Repeated keys in one batch: the last one wins.
    s.batch_put(vec![
        Item::new("BATCH", "dup").with("v", "1"),
        Item::new("BATCH", "other").with("v", "x"),
        Item::new("BATCH", "dup").with("v", "2"),
    ])
    .await
    .unwrap_or_else(|e| panic!("{w} batch with a repeated key: {e:?}"));
    assert_eq!(
        s.get("BATCH", "dup").await.unwrap(),
        Some(Item::new("BATCH", "dup").with("v", "2")),
        "{w}"
    );
    s.batch_put(vec![])
        .await
        .unwrap_or_else(|e| panic!("{w} empty batch: {e:?}"));

    // Batch reads: the answers in the order asked, `None` where no item is; up to 100 keys.
    let mut keys: Vec<(String, String)> = vec![
        ("BATCH".into(), "n#042".into()),
        ("BATCH".into(), "missing".into()),
        ("NOWHERE".into(), "n#001".into()),
        ("BATCH".into(), "n#001".into()),
    ];
    let got = s
        .get_many(&keys)
        .await
        .unwrap_or_else(|e| panic!("{w} get_many: {e:?}"));
    assert_eq!(
        got,
        vec![Some(items[42].clone()), None, None, Some(items[1].clone())],
        "{w} get_many"
    );
    assert_eq!(
        s.get_many(&[]).await.unwrap(),
        Vec::new(),
        "{w} get_many of nothing"
    );
    keys = (0..100)
        .map(|i| ("BATCH".into(), format!("n#{i:03}")))
        .collect();
    let got = s
        .get_many(&keys)
        .await
        .unwrap_or_else(|e| panic!("{w} get_many of 100: {e:?}"));
    assert_eq!(got.len(), 100, "{w}");
    for (i, item) in got.iter().enumerate() {
        assert_eq!(item.as_ref(), items.get(i), "{w} get_many of 100, key {i}");
    }

    // Scan paging: every item of the table exactly once, whatever the page size.
    all.extend(items.iter().map(|i| (i.pk.clone(), i.sk.clone())));
    all.insert(("BATCH".into(), "dup".into()));
    all.insert(("BATCH".into(), "other".into()));
    for p in 0..5 {
        put(s, Item::new(format!("SCAN#{p}"), "S").with("data", "x")).await;
        all.insert((format!("SCAN#{p}"), "S".into()));
    }
    for limit in [1usize, 7, 25, 1000] {
        let unique = scan_keys(s, limit, w).await;
        assert_eq!(unique, all, "{w} scan limit={limit}: every item once");
    }
}

/// Every key a paged scan returns, checking page sizes and that no key comes twice.
async fn scan_keys(s: &dyn ItemStore, limit: usize, w: &str) -> BTreeSet<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut start: Option<PageKey> = None;
    let mut pages = 0;
    loop {
        let page = s
            .scan(start.take(), limit)
            .await
            .unwrap_or_else(|e| panic!("{w} scan: {e:?}"));
        assert!(page.items.len() <= limit, "{w} scan page over {limit}");
        seen.extend(page.items.iter().map(|i| (i.pk.clone(), i.sk.clone())));
        pages += 1;
        assert!(pages < 1000, "{w} scan did not end");
        match page.next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    let unique: BTreeSet<(String, String)> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{w} scan limit={limit}: duplicates"
    );
    unique
}

// ----- BlobStore -----------------------------------------------------------------------------------

async fn put_blob(blobs: &dyn BlobStore, key: &str, bytes: &[u8]) {
    blobs
        .put(key, Bytes::copy_from_slice(bytes), &sha256_hex(bytes))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

pub async fn blobs_round_trip_missing_delete_copy(be: &Backend<'_>) {
    let w = be.label;
    let b = be.blobs;
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    put_blob(b, "t/one.bin", &payload).await;
    assert_eq!(b.get("t/one.bin").await.unwrap(), payload, "{w} round trip");

    // Overwrite.
    put_blob(b, "t/one.bin", b"second").await;
    assert_eq!(
        &b.get("t/one.bin").await.unwrap()[..],
        b"second",
        "{w} overwrite"
    );

    expect_err(
        &format!("{w} get of a missing key"),
        b.get("t/missing.bin").await,
        |e| matches!(e, Error::NotFound(_)),
        "NotFound",
    );
    // A key that only prefixes an existing one is not that one.
    expect_err(
        &format!("{w} get of a prefix"),
        b.get("t/one").await,
        |e| matches!(e, Error::NotFound(_)),
        "NotFound",
    );

    // A "directory" of keys is not a blob.
    expect_err(
        &format!("{w} get of a key prefix ending in a slash"),
        b.get("t").await,
        |e| matches!(e, Error::NotFound(_)),
        "NotFound",
    );

    // Copy: both readable, independent.
    b.copy("t/one.bin", "u/copy.bin")
        .await
        .unwrap_or_else(|e| panic!("{w} copy: {e:?}"));
    assert_eq!(
        &b.get("u/copy.bin").await.unwrap()[..],
        b"second",
        "{w} copy"
    );
    assert_eq!(
        &b.get("t/one.bin").await.unwrap()[..],
        b"second",
        "{w} source"
    );
    put_blob(b, "u/copy.bin", b"changed").await;
    assert_eq!(
        &b.get("t/one.bin").await.unwrap()[..],
        b"second",
        "{w} independent"
    );
    expect_err(
        &format!("{w} copy of a missing key"),
        b.copy("t/missing.bin", "u/never.bin").await,
        |e| matches!(e, Error::NotFound(_)),
        "NotFound",
    );
    expect_err(
        &format!("{w} target of a failed copy"),
        b.get("u/never.bin").await,
        |e| matches!(e, Error::NotFound(_)),
        "NotFound",
    );

    // Delete is idempotent.
    b.delete("t/one.bin")
        .await
        .unwrap_or_else(|e| panic!("{w} delete: {e:?}"));
    expect_err(
        &format!("{w} get after delete"),
        b.get("t/one.bin").await,
        |e| matches!(e, Error::NotFound(_)),
        "NotFound",
    );
    b.delete("t/one.bin")
        .await
        .unwrap_or_else(|e| panic!("{w} second delete: {e:?}"));
    b.delete("never/existed.bin")
        .await
        .unwrap_or_else(|e| panic!("{w} delete of a missing key: {e:?}"));
    assert_eq!(&b.get("u/copy.bin").await.unwrap()[..], b"changed", "{w}");
}

pub async fn blobs_list_by_prefix_with_paging(be: &Backend<'_>) {
    let w = be.label;
    let b = be.blobs;
    let keys: Vec<String> = (0..12).map(|i| format!("list/a/{i:03}.json")).collect();
    for (i, k) in keys.iter().enumerate() {
        put_blob(b, k, "x".repeat(i + 1).as_bytes()).await;
    }
    put_blob(b, "list/ab.json", b"not under list/a/").await;
    put_blob(b, "list/b/000.json", b"b").await;
    put_blob(b, "other/000.json", b"o").await;

    for limit in [1usize, 5, 12, 13, 1000] {
        let mut seen = Vec::new();
        let mut start: Option<String> = None;
        for round in 0.. {
            assert!(round < 100, "{w} listing did not end");
            let (page, next) = b
                .list("list/a/", start.take(), limit)
                .await
                .unwrap_or_else(|e| panic!("{w} list: {e:?}"));
            assert!(page.len() <= limit, "{w} page over {limit}");
            seen.extend(page);
            match next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        let got: Vec<&str> = seen.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            got, keys,
            "{w} list limit={limit}: every key once, in order"
        );
        for (i, m) in seen.iter().enumerate() {
            assert_eq!(m.size, i as u64 + 1, "{w} size of {}", m.key);
        }
    }
    let (all_list, _) = b.list("list/", None, 1000).await.unwrap();
    assert_eq!(all_list.len(), 14, "{w} list/: {all_list:?}");
    let (none, next) = b.list("nothing/", None, 10).await.unwrap();
    assert!(none.is_empty() && next.is_none(), "{w} empty prefix");
    // Starting after a key lists only what follows it.
    let (after, _) = b
        .list("list/a/", Some("list/a/009.json".into()), 1000)
        .await
        .unwrap();
    let got: Vec<&str> = after.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(got, keys[10..].to_vec(), "{w} start after");
}

pub async fn blobs_exists(be: &Backend<'_>) {
    let w = be.label;
    let b = be.blobs;
    assert!(
        !b.exists("e/one.bin").await.unwrap(),
        "{w} exists before put"
    );
    put_blob(b, "e/one.bin", b"here").await;
    assert!(b.exists("e/one.bin").await.unwrap(), "{w} exists after put");
    // Only the exact key: neither a prefix nor a longer key.
    assert!(!b.exists("e/one").await.unwrap(), "{w} exists of a prefix");
    assert!(!b.exists("e").await.unwrap(), "{w} exists of a folder");
    assert!(
        !b.exists("e/one.bin.x").await.unwrap(),
        "{w} exists of a longer key"
    );
    b.delete("e/one.bin").await.unwrap();
    assert!(
        !b.exists("e/one.bin").await.unwrap(),
        "{w} exists after delete"
    );
}

/// Waits (up to 30 s) until a restore requested for `key` is readable, returning the tiers seen.
async fn until_restored(b: &dyn BlobStore, key: &str) -> Vec<BlobTier> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let tier = b.tier(key).await.expect("tier while restoring");
        if seen.last() != Some(&tier) {
            seen.push(tier);
        }
        if tier != BlobTier::Restoring || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn blobs_archive_tier_restore(be: &Backend<'_>) {
    let w = be.label;
    let b = be.blobs;
    let key = "a/cold.json";
    let bytes = b"{\"cold\": true}";
    put_blob(b, key, bytes).await;
    assert_eq!(
        b.tier(key).await.unwrap(),
        BlobTier::Standard,
        "{w} a new blob is standard"
    );
    // Standard tier: a restore request and an unarchive are no-ops.
    b.request_restore(key)
        .await
        .unwrap_or_else(|e| panic!("{w} restore of a standard blob: {e:?}"));
    b.unarchive(key)
        .await
        .unwrap_or_else(|e| panic!("{w} unarchive of a standard blob: {e:?}"));
    assert_eq!(&b.get(key).await.unwrap()[..], bytes, "{w} still readable");

    b.archive(key)
        .await
        .unwrap_or_else(|e| panic!("{w} archive: {e:?}"));
    assert_eq!(
        b.tier(key).await.unwrap(),
        BlobTier::Archived,
        "{w} tier after archive"
    );
    b.archive(key)
        .await
        .unwrap_or_else(|e| panic!("{w} archive again (a no-op): {e:?}"));
    assert_eq!(
        b.tier(key).await.unwrap(),
        BlobTier::Archived,
        "{w} archive again"
    );
    expect_err(
        &format!("{w} get of an archived blob"),
        b.get(key).await,
        |e| matches!(e, Error::Archived(_)),
        "Archived",
    );
    assert!(b.exists(key).await.unwrap(), "{w} an archived blob exists");
    let (listed, _) = b.list("a/", None, 100).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        [key],
        "{w} an archived blob is listed"
    );
    if !be.instant_restore {
        expect_err(
            &format!("{w} unarchive before any restore"),
            b.unarchive(key).await,
            |e| matches!(e, Error::Archived(_)),
            "Archived",
        );
    }

    b.request_restore(key)
        .await
        .unwrap_or_else(|e| panic!("{w} restore request: {e:?}"));
    b.request_restore(key)
        .await
        .unwrap_or_else(|e| panic!("{w} restore request again: {e:?}"));
    let seen = until_restored(b, key).await;
    if be.instant_restore {
        assert_eq!(
            seen,
            [BlobTier::Standard],
            "{w} tiers after a restore request"
        );
    } else {
        assert!(
            matches!(
                seen.as_slice(),
                [BlobTier::Restored] | [BlobTier::Restoring, BlobTier::Restored]
            ),
            "{w} tiers after a restore request: {seen:?}"
        );
    }
    b.unarchive(key)
        .await
        .unwrap_or_else(|e| panic!("{w} unarchive: {e:?}"));
    assert_eq!(
        b.tier(key).await.unwrap(),
        BlobTier::Standard,
        "{w} tier after unarchive"
    );
    assert_eq!(
        &b.get(key).await.unwrap()[..],
        bytes,
        "{w} readable after unarchive, same bytes"
    );

    for (what, r) in [
        ("archive", b.archive("a/missing.json").await),
        ("tier", b.tier("a/missing.json").await.map(|_| ())),
    ] {
        expect_err(
            &format!("{w} {what} of a missing blob"),
            r,
            |e| matches!(e, Error::NotFound(_)),
            "NotFound",
        );
    }
}

pub async fn blobs_multipart(be: &Backend<'_>) {
    let w = be.label;
    let b = be.blobs;
    let Some(mut up) = b.start_multipart("m/big.bin").await.unwrap() else {
        // A backend without multipart uploads: the callers buffer and `put` (nothing to check).
        return;
    };
    let first: Vec<u8> = (0..super::MIN_MULTIPART_PART)
        .map(|i| (i % 251) as u8)
        .collect();
    let second = b"the last part may be short".to_vec();
    up.write_part(Bytes::from(first.clone()))
        .await
        .unwrap_or_else(|e| panic!("{w} part 1: {e:?}"));
    assert!(
        !b.exists("m/big.bin").await.unwrap(),
        "{w} invisible before complete"
    );
    up.write_part(Bytes::from(second.clone()))
        .await
        .unwrap_or_else(|e| panic!("{w} part 2: {e:?}"));
    up.complete()
        .await
        .unwrap_or_else(|e| panic!("{w} complete: {e:?}"));
    let got = b.get("m/big.bin").await.unwrap();
    assert_eq!(got.len(), first.len() + second.len(), "{w} completed size");
    assert!(
        got[..first.len()] == first[..] && got[first.len()..] == second[..],
        "{w} parts in order"
    );

    // An aborted upload leaves nothing, and does not touch an existing blob of the same key.
    let mut up = b
        .start_multipart("m/big.bin")
        .await
        .unwrap()
        .expect("multipart again");
    up.write_part(Bytes::from(first.clone())).await.unwrap();
    up.abort()
        .await
        .unwrap_or_else(|e| panic!("{w} abort: {e:?}"));
    assert_eq!(
        b.get("m/big.bin").await.unwrap().len(),
        got.len(),
        "{w} abort keeps the old blob"
    );
    let mut up = b
        .start_multipart("m/never.bin")
        .await
        .unwrap()
        .expect("multipart");
    up.write_part(Bytes::from(second)).await.unwrap();
    up.abort().await.unwrap();
    assert!(
        !b.exists("m/never.bin").await.unwrap(),
        "{w} an aborted upload leaves no blob"
    );
    let (listed, _) = b.list("m/", None, 100).await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["m/big.bin"],
        "{w} listing after uploads"
    );
}
