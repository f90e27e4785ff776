//! The embedded backend: items in SQLite (WAL, one writer, many readers) mirroring the DynamoDB
//! single table and its four indexes; blobs as files under the data directory, written atomically
//! (temporary file, fsync, rename, fsync of the directory).

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{
    page_key_of, BlobMeta, BlobStore, BlobTier, Condition, Index, Item, ItemStore, MultipartUpload,
    Page, PageKey, Query, SkRange, WriteOp,
};
use crate::error::{Error, Result};

const READERS: usize = 4;

/// Column names of each index in the `items` table.
fn columns(index: Index) -> (&'static str, &'static str) {
    match index {
        Index::Table => ("pk", "sk"),
        Index::Gsi1 => ("g1pk", "g1sk"),
        Index::Gsi2 => ("g2pk", "g2sk"),
        Index::Gsi3 => ("g3pk", "g3sk"),
        Index::Gsi4 => ("g4pk", "g4sk"),
    }
}

fn db_err(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::Throttled(format!("embedded database busy: {e}"))
        }
        _ => Error::Unavailable(format!("embedded database: {e}")),
    }
}

/// SQLite-backed [`ItemStore`].
pub struct SqliteItemStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl SqliteItemStore {
    /// Opens (creating if needed) `<dir>/metadata.db`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("metadata.db");
        let writer = Connection::open(&path).map_err(db_err)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 PRAGMA busy_timeout=5000;
                 CREATE TABLE IF NOT EXISTS items (
                    pk TEXT NOT NULL, sk TEXT NOT NULL, attrs TEXT NOT NULL,
                    g1pk TEXT, g1sk TEXT, g2pk TEXT, g2sk TEXT, g3pk TEXT, g3sk TEXT, g4pk TEXT, g4sk TEXT,
                    PRIMARY KEY (pk, sk)) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS gsi1 ON items (g1pk, g1sk, pk, sk) WHERE g1pk IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS gsi2 ON items (g2pk, g2sk, pk, sk) WHERE g2pk IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS gsi3 ON items (g3pk, g3sk, pk, sk) WHERE g3pk IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS gsi4 ON items (g4pk, g4sk, pk, sk) WHERE g4pk IS NOT NULL;",
            )
            .map_err(db_err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(db_err)?;
            c.execute_batch("PRAGMA busy_timeout=5000;")
                .map_err(db_err)?;
            readers.push(Mutex::new(c));
        }
        Ok(SqliteItemStore {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % READERS;
        tokio::task::spawn_blocking(move || {
            let conn = readers[i]
                .lock()
                .map_err(|_| Error::Internal("reader lock poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Internal(format!("embedded read task failed: {e}")))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| Error::Internal("writer lock poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Internal(format!("embedded write task failed: {e}")))?
    }
}

const SELECT: &str = "SELECT pk, sk, attrs FROM items";

fn row_to_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn to_item((pk, sk, attrs): (String, String, String)) -> Result<Item> {
    let attrs = serde_json::from_str(&attrs)
        .map_err(|e| Error::Internal(format!("item {pk}/{sk} unreadable: {e}")))?;
    Ok(Item { pk, sk, attrs })
}

fn get_item(conn: &Connection, pk: &str, sk: &str) -> Result<Option<Item>> {
    conn.prepare_cached(&format!("{SELECT} WHERE pk = ?1 AND sk = ?2"))
        .map_err(db_err)?
        .query_row([pk, sk], row_to_item)
        .optional()
        .map_err(db_err)?
        .map(to_item)
        .transpose()
}

fn holds(current: Option<&Item>, cond: &Condition) -> bool {
    match cond {
        Condition::None => true,
        Condition::NotExists => current.is_none(),
        Condition::Exists => current.is_some(),
        Condition::AttrEquals(name, value) => {
            current.and_then(|i| i.get(name)) == Some(value.as_str())
        }
    }
}

fn put_item(conn: &Connection, item: &Item) -> Result<()> {
    let attrs = serde_json::to_string(&item.attrs).expect("attrs serialize");
    // As in DynamoDB, an item is in an index only when it has BOTH of the index's key attributes.
    let g = |i: Index, pk: bool| match (item.get(i.pk_attr()), item.get(i.sk_attr())) {
        (Some(p), Some(s)) => Some(if pk { p } else { s }.to_owned()),
        _ => None,
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO items (pk, sk, attrs, g1pk, g1sk, g2pk, g2sk, g3pk, g3sk, g4pk, g4sk)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .map_err(db_err)?
    .execute(rusqlite::params![
        item.pk,
        item.sk,
        attrs,
        g(Index::Gsi1, true),
        g(Index::Gsi1, false),
        g(Index::Gsi2, true),
        g(Index::Gsi2, false),
        g(Index::Gsi3, true),
        g(Index::Gsi3, false),
        g(Index::Gsi4, true),
        g(Index::Gsi4, false),
    ])
    .map_err(db_err)?;
    Ok(())
}

fn run_query(conn: &Connection, q: &Query) -> Result<Page<Item>> {
    let (pkc, skc) = columns(q.index);
    let mut sql = format!("{SELECT} WHERE {pkc} = ?");
    let mut args: Vec<String> = vec![q.pk.clone()];
    match &q.sk {
        SkRange::All => {}
        SkRange::BeginsWith(p) => {
            // A range instead of LIKE: exact bytes, index-friendly.
            sql.push_str(&format!(" AND {skc} >= ? AND {skc} < ?"));
            args.push(p.clone());
            args.push(format!("{p}\u{10FFFF}"));
        }
        SkRange::Between(a, b) => {
            sql.push_str(&format!(" AND {skc} BETWEEN ? AND ?"));
            args.push(a.clone());
            args.push(b.clone());
        }
        SkRange::Gte(a) => {
            sql.push_str(&format!(" AND {skc} >= ?"));
            args.push(a.clone());
        }
        SkRange::Lte(b) => {
            sql.push_str(&format!(" AND {skc} <= ?"));
            args.push(b.clone());
        }
    }
    let (cmp, dir) = if q.forward {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    if let Some(start) = &q.start {
        let get = |name: &str| {
            start.get(name).cloned().ok_or_else(|| {
                Error::invalid(
                    "cursor",
                    "the cursor is invalid or belongs to another listing",
                )
            })
        };
        if q.index == Index::Table {
            sql.push_str(&format!(" AND sk {cmp} ?"));
            args.push(get("SK")?);
        } else {
            sql.push_str(&format!(" AND ({skc}, pk, sk) {cmp} (?, ?, ?)"));
            args.push(get(q.index.sk_attr())?);
            args.push(get("PK")?);
            args.push(get("SK")?);
        }
    }
    if q.index == Index::Table {
        sql.push_str(&format!(" ORDER BY sk {dir} LIMIT ?"));
    } else {
        sql.push_str(&format!(
            " ORDER BY {skc} {dir}, pk {dir}, sk {dir} LIMIT ?"
        ));
    }
    let limit = q.limit.max(1);
    args.push((limit + 1).to_string());
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), row_to_item)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let more = rows.len() > limit;
    let items = rows
        .into_iter()
        .take(limit)
        .map(to_item)
        .collect::<Result<Vec<_>>>()?;
    let next = if more {
        items.last().map(|i| page_key_of(i, q.index))
    } else {
        None
    };
    Ok(Page { items, next })
}

#[async_trait]
impl ItemStore for SqliteItemStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        let (pk, sk) = (pk.to_owned(), sk.to_owned());
        self.read(move |c| get_item(c, &pk, &sk)).await
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        let keys = keys.to_vec();
        self.read(move |c| {
            keys.iter()
                .map(|(pk, sk)| get_item(c, pk, sk))
                .collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        for op in &ops {
            op.check_numbers()?;
        }
        if ops.len() > 100 {
            return Err(Error::Internal(format!(
                "a transaction of {} writes is over the limit of 100",
                ops.len()
            )));
        }
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let mut failed = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                let (pk, sk) = op.key();
                let cond = match op {
                    WriteOp::Put { condition, .. }
                    | WriteOp::Delete { condition, .. }
                    | WriteOp::Check { condition, .. } => condition,
                    WriteOp::Add { .. } => &Condition::None,
                };
                if *cond != Condition::None && !holds(get_item(&tx, pk, sk)?.as_ref(), cond) {
                    failed.push(i);
                }
            }
            if !failed.is_empty() {
                return Err(Error::ConditionFailed { ops: failed });
            }
            for op in &ops {
                match op {
                    WriteOp::Put { item, .. } => put_item(&tx, item)?,
                    WriteOp::Delete { pk, sk, .. } => {
                        tx.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")
                            .map_err(db_err)?
                            .execute([pk, sk])
                            .map_err(db_err)?;
                    }
                    WriteOp::Check { .. } => {}
                    WriteOp::Add {
                        pk,
                        sk,
                        add,
                        set,
                        remove,
                    } => {
                        let mut item = get_item(&tx, pk, sk)?.unwrap_or_else(|| Item::new(pk, sk));
                        for name in remove {
                            item.attrs.remove(name);
                        }
                        for (name, n) in add {
                            let old = item.get(name).and_then(|v| v.parse::<i64>().ok());
                            let new = old.unwrap_or(0).saturating_add(*n);
                            item.attrs.insert(name.clone(), new.to_string());
                        }
                        for (name, v) in set {
                            item.attrs.insert(name.clone(), v.clone());
                        }
                        put_item(&tx, &item)?;
                    }
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        let q = query.clone();
        self.read(move |c| run_query(c, &q)).await
    }

    /// SQLite writes the whole batch in one transaction: nothing is ever left unprocessed.
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        self.batch_put(items).await.map(|()| Vec::new())
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            for item in &items {
                put_item(&tx, item)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        self.read(move |conn| {
            let limit = limit.max(1);
            let (sql, args): (String, Vec<String>) = match &start {
                Some(k) => (
                    format!("{SELECT} WHERE (pk, sk) > (?, ?) ORDER BY pk, sk LIMIT ?"),
                    vec![
                        k.get("PK").cloned().unwrap_or_default(),
                        k.get("SK").cloned().unwrap_or_default(),
                        (limit + 1).to_string(),
                    ],
                ),
                None => (
                    format!("{SELECT} ORDER BY pk, sk LIMIT ?"),
                    vec![(limit + 1).to_string()],
                ),
            };
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), row_to_item)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            let more = rows.len() > limit;
            let items = rows
                .into_iter()
                .take(limit)
                .map(to_item)
                .collect::<Result<Vec<_>>>()?;
            let next = if more {
                items.last().map(|i| page_key_of(i, Index::Table))
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }
}

/// Blobs as files under a root directory.
pub struct FileBlobStore {
    root: PathBuf,
}

impl FileBlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", root.display())))?;
        Ok(FileBlobStore {
            root: root.to_owned(),
        })
    }

    /// Maps a blob key to a path under the root, refusing anything that could leave it.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        let safe = !key.is_empty()
            && !key.contains('\\')
            && !key.contains('\0')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(Error::invalid(
                "key",
                format!("blob key {key:?} is not a safe relative path"),
            ));
        }
        Ok(self.root.join(rel))
    }

    /// Where an archived blob lives: the same key under `<root>/archive/`.
    fn archive_path(&self, key: &str) -> Result<PathBuf> {
        self.path(key)?;
        Ok(self.root.join(ARCHIVE_DIR).join(key))
    }
}

pub use super::ARCHIVE_DIR;

/// Renames a file into place (creating the target's directory) and syncs the directory.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    std::fs::rename(from, to).map_err(|e| io_err(from, e))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(dir, e))
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(format!("no blob at {}", path.display()))
    } else {
        Error::Unavailable(format!("{}: {e}", path.display()))
    }
}

#[async_trait]
impl BlobStore for FileBlobStore {
    async fn put(&self, key: &str, bytes: Bytes, _sha256_hex: &str) -> Result<()> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| Error::Internal(format!("blob write task failed: {e}")))?
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Bytes::from(b)),
            // A directory (a prefix of other keys) or a path through a file is no blob, as in S3.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && !path.is_file() => {
                Err(Error::NotFound(format!("no blob at {}", path.display())))
            }
            Err(_) if self.archive_path(key)?.is_file() => Err(Error::Archived(format!(
                "blob {key} is in the archive directory"
            ))),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        for path in [self.path(key)?, self.archive_path(key)?] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Ok(())
    }

    async fn archive(&self, key: &str) -> Result<()> {
        let (path, archived) = (self.path(key)?, self.archive_path(key)?);
        tokio::task::spawn_blocking(move || {
            if path.is_file() {
                move_file(&path, &archived)
            } else if archived.is_file() {
                Ok(())
            } else {
                Err(Error::NotFound(format!("no blob at {}", path.display())))
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("blob archive task failed: {e}")))?
    }

    async fn tier(&self, key: &str) -> Result<BlobTier> {
        let (path, archived) = (self.path(key)?, self.archive_path(key)?);
        if path.is_file() {
            Ok(BlobTier::Standard)
        } else if archived.is_file() {
            Ok(BlobTier::Archived)
        } else {
            Err(Error::NotFound(format!("no blob at {}", path.display())))
        }
    }

    /// The embedded archive is a local directory: a restore completes at once.
    async fn request_restore(&self, key: &str) -> Result<()> {
        self.unarchive(key).await
    }

    async fn unarchive(&self, key: &str) -> Result<()> {
        let (path, archived) = (self.path(key)?, self.archive_path(key)?);
        tokio::task::spawn_blocking(move || {
            if path.is_file() {
                Ok(())
            } else if archived.is_file() {
                move_file(&archived, &path)
            } else {
                Err(Error::NotFound(format!("no blob at {}", path.display())))
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("blob restore task failed: {e}")))?
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let bytes = self.get(from).await?;
        self.put(to, bytes, "").await
    }

    /// A blob exists in either tier (as an S3 object in Glacier still answers `HeadObject`).
    async fn exists(&self, key: &str) -> Result<bool> {
        for path in [self.path(key)?, self.archive_path(key)?] {
            match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if !path.is_file() => {
                    tracing::debug!(error = %e, "blob path is not a file");
                }
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Ok(false)
    }

    async fn start_multipart(&self, key: &str) -> Result<Option<Box<dyn MultipartUpload>>> {
        let path = self.path(key)?;
        let dir = path.parent().expect("blob paths have a parent").to_owned();
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::now_v7()));
        let file = {
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
                std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))
            })
            .await
            .map_err(|e| Error::Internal(format!("blob write task failed: {e}")))??
        };
        Ok(Some(Box::new(FileUpload {
            tmp,
            path,
            file: Some(file),
        })))
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<BlobMeta>, Option<String>)> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            // Walk only the deepest directory the prefix names (`backups/` skips `programs/`), in
            // both tiers: an archived blob is listed, as S3 lists an object in Glacier.
            let dir = match prefix.rfind('/') {
                Some(i)
                    if Path::new(&prefix[..i])
                        .components()
                        .all(|c| matches!(c, Component::Normal(_))) =>
                {
                    &prefix[..i]
                }
                _ => "",
            };
            let archive = root.join(ARCHIVE_DIR);
            for tier_root in [&root, &archive] {
                let base = tier_root.join(dir);
                if base.is_dir() {
                    collect_files(tier_root, &base, &archive, &mut keys)?;
                }
            }
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            keys.dedup_by(|a, b| a.0 == b.0);
            let mut out = Vec::new();
            for (key, meta) in keys {
                if !key.starts_with(&prefix)
                    || start.as_ref().is_some_and(|s| key.as_str() <= s.as_str())
                {
                    continue;
                }
                if out.len() == limit {
                    let next = out.last().map(|m: &BlobMeta| m.key.clone());
                    return Ok((out, next));
                }
                out.push(BlobMeta {
                    key,
                    size: meta.len(),
                    last_modified: meta
                        .modified()
                        .ok()
                        .map(chrono::DateTime::<chrono::Utc>::from),
                });
            }
            Ok((out, None))
        })
        .await
        .map_err(|e| Error::Internal(format!("blob list task failed: {e}")))?
    }
}

/// A multipart upload to a file: parts are appended to a temporary file in the target's
/// directory, which is fsynced and renamed over the target on completion.
struct FileUpload {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<std::fs::File>,
}

#[async_trait]
impl MultipartUpload for FileUpload {
    async fn write_part(&mut self, bytes: Bytes) -> Result<()> {
        use std::io::Write;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::Internal("multipart upload already finished".into()))?;
        let tmp = self.tmp.clone();
        let file = tokio::task::spawn_blocking(move || {
            file.write_all(&bytes)
                .map(|()| file)
                .map_err(|e| io_err(&tmp, e))
        })
        .await
        .map_err(|e| Error::Internal(format!("blob write task failed: {e}")))??;
        self.file = Some(file);
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Internal("multipart upload already finished".into()))?;
        let (tmp, path) = (self.tmp.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let result = (|| {
                file.sync_all()?;
                drop(file);
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(path.parent().expect("blob paths have a parent"))?.sync_all()
            })();
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err(&path, e));
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("blob write task failed: {e}")))?
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file = None;
        match tokio::fs::remove_file(&self.tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.tmp, e)),
        }
    }
}

/// The files under `dir`, keyed by their path relative to `root`; `skip` (the archive directory,
/// when walking the standard tier) is not entered.
fn collect_files(
    root: &Path,
    dir: &Path,
    skip: &Path,
    out: &mut Vec<(String, std::fs::Metadata)>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| io_err(&path, e))?;
        if meta.is_dir() {
            if path != skip {
                collect_files(root, &path, skip, out)?;
            }
        } else if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        {
            let rel = path.strip_prefix(root).expect("under root");
            out.push((rel.to_string_lossy().replace('\\', "/"), meta));
        }
    }
    Ok(())
}

/// Writes a file so that readers see the old content or the new, never a part: a temporary file
/// in the same directory, fsync, rename over the target, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::now_v7()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Opens both embedded stores under a data directory: `<dir>/metadata.db` and `<dir>/programs/…`.
pub fn open(data_dir: &Path) -> Result<(SqliteItemStore, FileBlobStore)> {
    Ok((
        SqliteItemStore::open(data_dir)?,
        FileBlobStore::open(data_dir)?,
    ))
}

#[cfg(test)]
mod conformance_tests {
    /// The backend conformance suite (every `ItemStore` and `BlobStore` primitive) on the
    /// embedded backend.
    #[tokio::test]
    async fn the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let (items, blobs) = super::open(dir.path()).unwrap();
        let be = crate::backend::conformance::Backend {
            label: "[Embedded]",
            items: &items,
            blobs: &blobs,
            instant_restore: true,
        };
        crate::backend::conformance::run(&be).await;
    }
}
