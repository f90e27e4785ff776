//! The narrow capabilities a backend provides. Everything else (versions, search, codecs,
//! retention, ...) is written once in the core on top of these.
//!
//! * [`ItemStore`]: a DynamoDB-shaped item store — items addressed by a partition key and a sort
//!   key, string attributes, four overloaded secondary indexes, conditional transactions, ordered
//!   range reads with pagination.
//! * [`BlobStore`]: an object store — put, get, delete, copy, list by prefix; and an archive tier
//!   (archive, tier, request a restore, move a restored blob back).
//!
//! Backends: [`aws`] (DynamoDB + S3) and `embedded` (SQLite + local files; cargo feature
//! `embedded`, on by default, off in the Lambda build).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod aws;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod retry;

/// The embedded store's archive directory (under the data directory): an archived blob is listed
/// as `archive/<key>` there. Here rather than in `embedded` because cleanup lists that prefix on
/// every backend, and the Lambda build has no `embedded` module.
pub const ARCHIVE_DIR: &str = "archive";

/// Attribute names with a meaning to every backend.
pub mod attr {
    pub const PK: &str = "PK";
    pub const SK: &str = "SK";
    /// The record itself, as JSON text.
    pub const DATA: &str = "data";
    /// A revision counter used by compare-and-set writes.
    pub const REV: &str = "rev";
    /// Attributes named with this prefix hold integers: DynamoDB numbers (`N`), the only
    /// attributes [`super::WriteOp::Add`] may add to. Every write keeps them numbers, so an item
    /// copied with a plain put (a backup restore) stays addable.
    pub const NUMBER_PREFIX: &str = "n_";
    /// Attributes named with this prefix hold bytes, as standard base64 text in an [`super::Item`]:
    /// a store with a binary type keeps the bytes (DynamoDB `B`: its size, and so its capacity
    /// units, is that of the bytes, not of the text); the others keep the text.
    pub const BINARY_PREFIX: &str = "b_";
}

/// An item: partition key, sort key and string attributes. Index key attributes are named by
/// [`Index::pk_attr`] / [`Index::sk_attr`]; an item without them is not in that index (sparse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub attrs: BTreeMap<String, String>,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Item {
            pk: pk.into(),
            sk: sk.into(),
            attrs: BTreeMap::new(),
        }
    }
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
    pub fn data(&self) -> Option<&str> {
        self.get(attr::DATA)
    }
}

/// The table itself or one of the four global secondary indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Index {
    Table,
    Gsi1,
    Gsi2,
    Gsi3,
    Gsi4,
}

impl Index {
    pub const GSIS: [Index; 4] = [Index::Gsi1, Index::Gsi2, Index::Gsi3, Index::Gsi4];

    /// The DynamoDB index name: `GSI1K`..`GSI4K`, keys-only indexes (only the table's and the
    /// index's key attributes are copied into them, and [`Index::projected`]): a query reads the
    /// items themselves afterwards (see [`Query::keys_only`]).
    pub fn name(self) -> &'static str {
        match self {
            Index::Table => "table",
            Index::Gsi1 => "GSI1K",
            Index::Gsi2 => "GSI2K",
            Index::Gsi3 => "GSI3K",
            Index::Gsi4 => "GSI4K",
        }
    }

    /// The name of the same index on a table created before the keys-only indexes (`GSI1`..
    /// `GSI4`, every attribute copied: `ProjectionType: ALL`), read until `dspy-storage
    /// migrate-indexes` replaced them. Same key attributes, so the new indexes fill from the
    /// existing items: nothing is rewritten.
    pub fn legacy_name(self) -> &'static str {
        match self {
            Index::Table => "table",
            Index::Gsi1 => "GSI1",
            Index::Gsi2 => "GSI2",
            Index::Gsi3 => "GSI3",
            Index::Gsi4 => "GSI4",
        }
    }

    /// The non-key attributes an index holds besides the keys (`ProjectionType: INCLUDE`): GSI3's
    /// counter items carry `project`, which never changes, so `GET /projects` reads the index
    /// alone. None of them changes once written: a write that leaves an item's index keys alone
    /// never rewrites its index entry.
    pub fn projected(self) -> &'static [&'static str] {
        match self {
            Index::Gsi3 => &["project"],
            _ => &[],
        }
    }
    pub fn pk_attr(self) -> &'static str {
        match self {
            Index::Table => attr::PK,
            Index::Gsi1 => "GSI1PK",
            Index::Gsi2 => "GSI2PK",
            Index::Gsi3 => "GSI3PK",
            Index::Gsi4 => "GSI4PK",
        }
    }
    pub fn sk_attr(self) -> &'static str {
        match self {
            Index::Table => attr::SK,
            Index::Gsi1 => "GSI1SK",
            Index::Gsi2 => "GSI2SK",
            Index::Gsi3 => "GSI3SK",
            Index::Gsi4 => "GSI4SK",
        }
    }
}

/// A condition on the current state of one item, checked atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    None,
    /// The item must not exist.
    NotExists,
    /// The item must exist.
    Exists,
    /// The item must exist and the attribute must have exactly this value.
    AttrEquals(String, String),
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put {
        item: Item,
        condition: Condition,
    },
    Delete {
        pk: String,
        sk: String,
        condition: Condition,
    },
    /// Checks a condition without writing.
    Check {
        pk: String,
        sk: String,
        condition: Condition,
    },
    /// Atomic counter update without a condition: adds each signed amount to a numeric
    /// attribute (named with [`attr::NUMBER_PREFIX`]; a missing one counts as 0), sets each
    /// string attribute and removes each attribute of `remove` (a missing one is ignored; never
    /// one it adds or sets), creating the item when missing. DynamoDB: `Update` with
    /// `SET`/`ADD`/`REMOVE`; embedded: an SQL read-modify-write inside the transaction. Counters
    /// read back as decimal strings.
    Add {
        pk: String,
        sk: String,
        add: Vec<(String, i64)>,
        set: Vec<(String, String)>,
        remove: Vec<String>,
    },
}

impl WriteOp {
    /// Refuses an [`WriteOp::Add`] to an attribute that is not a number attribute.
    pub fn check_numbers(&self) -> Result<()> {
        if let WriteOp::Add { add, .. } = self {
            if let Some((name, _)) = add
                .iter()
                .find(|(n, _)| !n.starts_with(attr::NUMBER_PREFIX))
            {
                return Err(crate::Error::Internal(format!(
                    "counter attribute {name:?} must start with {:?}",
                    attr::NUMBER_PREFIX
                )));
            }
        }
        Ok(())
    }
    pub fn put(item: Item, condition: Condition) -> Self {
        WriteOp::Put { item, condition }
    }
    pub fn delete(pk: impl Into<String>, sk: impl Into<String>, condition: Condition) -> Self {
        WriteOp::Delete {
            pk: pk.into(),
            sk: sk.into(),
            condition,
        }
    }
    pub fn key(&self) -> (&str, &str) {
        match self {
            WriteOp::Put { item, .. } => (&item.pk, &item.sk),
            WriteOp::Delete { pk, sk, .. }
            | WriteOp::Check { pk, sk, .. }
            | WriteOp::Add { pk, sk, .. } => (pk, sk),
        }
    }
}

/// A condition on the sort key of an index range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkRange {
    All,
    BeginsWith(String),
    /// Inclusive on both ends.
    Between(String, String),
    Gte(String),
    Lte(String),
}

/// Where a page read stopped: the key attributes of the last item returned (the table's and,
/// for an index, the index's). Opaque to callers; the core wraps it in a validated cursor.
pub type PageKey = BTreeMap<String, String>;

/// A range read of one partition of the table or of an index.
#[derive(Debug, Clone)]
pub struct Query {
    pub index: Index,
    pub pk: String,
    pub sk: SkRange,
    /// Ascending sort key order when true.
    pub forward: bool,
    pub limit: usize,
    pub start: Option<PageKey>,
    /// The caller reads only the keys of the items found (the table's and the index's) and the
    /// index's [`Index::projected`] attributes: a backend whose index holds no more may answer
    /// from the index alone. Otherwise (the default) every item comes back whole.
    pub keys_only: bool,
}

impl Query {
    pub fn new(index: Index, pk: impl Into<String>) -> Self {
        Query {
            index,
            pk: pk.into(),
            sk: SkRange::All,
            forward: true,
            limit: 100,
            start: None,
            keys_only: false,
        }
    }
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    pub fn sk(mut self, sk: SkRange) -> Self {
        self.sk = sk;
        self
    }
    pub fn forward(mut self, forward: bool) -> Self {
        self.forward = forward;
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    pub fn start(mut self, start: Option<PageKey>) -> Self {
        self.start = start;
        self
    }
}

/// One page of a range read or scan. `next` is `None` on the last page.
#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<PageKey>,
}

/// The page key of an item in an index: what a backend returns as `next` after it.
pub fn page_key_of(item: &Item, index: Index) -> PageKey {
    let mut key = PageKey::new();
    key.insert(attr::PK.to_owned(), item.pk.clone());
    key.insert(attr::SK.to_owned(), item.sk.clone());
    if index != Index::Table {
        for name in [index.pk_attr(), index.sk_attr()] {
            if let Some(v) = item.get(name) {
                key.insert(name.to_owned(), v.to_owned());
            }
        }
    }
    key
}

/// A DynamoDB-shaped item store. Implementations must make [`ItemStore::transact`] atomic and
/// isolated: either every operation applies and every condition held, or nothing changes and the
/// error is [`crate::Error::ConditionFailed`] listing the operations whose condition failed.
#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// Reads one item by key (strongly consistent).
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>>;
    /// Reads up to 100 items by key (strongly consistent) in ONE request where the store has a
    /// batch read (DynamoDB's `BatchGetItem`; keys it leaves unprocessed are asked for again):
    /// the answers in the order of `keys`, `None` for a missing item. Keys must be distinct.
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        let mut items = Vec::with_capacity(keys.len());
        for (pk, sk) in keys {
            items.push(self.get(pk, sk).await?);
        }
        Ok(items)
    }
    /// Applies up to 100 writes atomically, each with its condition.
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()>;
    /// Reads one page of a partition of the table or an index, in sort key order: whole items
    /// (an index's entry stands for its item; a backend whose index holds only keys reads the
    /// items, strongly consistent, and leaves out those gone or moved to another partition
    /// since), unless [`Query::keys_only`].
    async fn query(&self, query: &Query) -> Result<Page<Item>>;
    /// Writes many items without conditions (not atomic as a whole; each item is). Backends chunk
    /// and retry unprocessed items themselves.
    async fn batch_put(&self, items: Vec<Item>) -> Result<()>;
    /// ONE batch write of at most 25 items, without retries: returns the items the store did not
    /// process (DynamoDB's `UnprocessedItems`), for a caller that retries them with backoff
    /// itself ([`put_all`]).
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>>;
    /// Reads one page of every item. Maintenance and backup only: never on a request path.
    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>>;
}

/// Facts about a stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// The storage tier of a blob (cold archive support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobTier {
    /// Readable, in the standard tier.
    Standard,
    /// In the archive tier and not readable; no restore under way.
    Archived,
    /// In the archive tier; a restore is under way.
    Restoring,
    /// In the archive tier with a readable restored copy: ready to be moved back.
    Restored,
}

/// An object store.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Writes a blob atomically (readers see the old or the new bytes, never a part). `sha256_hex`
    /// is the SHA-256 of `bytes`; a backend that can verify it on arrival does.
    async fn put(&self, key: &str, bytes: Bytes, sha256_hex: &str) -> Result<()>;
    /// Reads a whole blob. Unknown key → `NotFound`; in cold storage → `Archived`.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Deletes a blob; deleting a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Copies a blob server-side.
    async fn copy(&self, from: &str, to: &str) -> Result<()>;
    /// Lists blobs under a prefix, one page at a time (`start` is the last key of the previous page).
    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<BlobMeta>, Option<String>)>;

    /// Moves a blob to the archive tier (S3: the configured archive storage class; embedded: the
    /// archive directory). Archiving an archived blob is a no-op; a missing blob is `NotFound`.
    async fn archive(&self, key: &str) -> Result<()>;
    /// Where a blob is now. A missing blob is `NotFound`.
    async fn tier(&self, key: &str) -> Result<BlobTier>;
    /// Asks for an archived blob back (S3 RestoreObject; the embedded store restores at once).
    /// Asking again while a restore is under way, or for a blob in the standard tier, is a no-op.
    async fn request_restore(&self, key: &str) -> Result<()>;
    /// Moves a restored blob back to the standard tier (no-op when it is already there);
    /// `Archived` while its restore has not completed.
    async fn unarchive(&self, key: &str) -> Result<()>;
    /// Whether a blob exists (S3 `HeadObject`; a blob in cold storage exists). The default reads
    /// the blob; backends override it with a metadata-only request.
    async fn exists(&self, key: &str) -> Result<bool> {
        match self.get(key).await {
            Ok(_) | Err(crate::Error::Archived(_)) => Ok(true),
            Err(crate::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Starts a multipart upload of one blob (written part by part, visible only once
    /// completed), or `None` when the backend has no such capability (the caller then buffers
    /// the whole blob and uses [`BlobStore::put`]).
    async fn start_multipart(&self, _key: &str) -> Result<Option<Box<dyn MultipartUpload>>> {
        Ok(None)
    }
}

/// The smallest part of a multipart upload but the last (S3's limit: 5 MiB).
pub const MIN_MULTIPART_PART: usize = 5 << 20;

/// A multipart upload in progress (see [`BlobStore::start_multipart`]).
#[async_trait]
pub trait MultipartUpload: Send {
    /// Appends one part. Every part but the last must be at least [`MIN_MULTIPART_PART`] bytes.
    async fn write_part(&mut self, bytes: Bytes) -> Result<()>;
    /// Completes the upload: the blob appears at once with every part in order.
    async fn complete(self: Box<Self>) -> Result<()>;
    /// Abandons the upload; nothing appears.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Items per `BatchWriteItem` (DynamoDB's limit).
pub const BATCH_CHUNK: usize = 25;
/// Attempts for one chunk's unprocessed items (the first write included).
pub const BATCH_ATTEMPTS: u32 = crate::retry::MAX_ATTEMPTS;

/// Writes items in chunks of [`BATCH_CHUNK`] through [`ItemStore::batch_put_once`], retrying
/// every unprocessed item (and transient errors) with backoff; nothing is dropped silently. What
/// is still unwritten after [`BATCH_ATTEMPTS`] is a `Throttled` error naming how much. A chunk
/// ends before a key it already holds (one request may not name a key twice), so a later write
/// of a key lands after the earlier one: the last wins.
pub async fn put_all<S: ItemStore + ?Sized>(store: &S, items: Vec<Item>) -> Result<()> {
    let mut rest = items;
    while !rest.is_empty() {
        let mut keys = std::collections::BTreeSet::new();
        let len = rest
            .iter()
            .take(BATCH_CHUNK)
            .take_while(|i| keys.insert((i.pk.as_str(), i.sk.as_str())))
            .count();
        let tail = rest.split_off(len);
        let mut pending = std::mem::replace(&mut rest, tail);
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            match store.batch_put_once(pending.clone()).await {
                Ok(unprocessed) => pending = unprocessed,
                Err(e) => return Err(e),
            }
            if pending.is_empty() {
                break;
            }
            if attempt >= BATCH_ATTEMPTS {
                return Err(crate::Error::Throttled(format!(
                    "{} record(s) still unprocessed after {attempt} attempts; retry them",
                    pending.len() + rest.len()
                )));
            }
            crate::retry::backoff(attempt).await;
        }
    }
    Ok(())
}
