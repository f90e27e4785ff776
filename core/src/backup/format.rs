//! The backup format (version 1).
//!
//! ```text
//! <prefix>/<name>/manifest.json            written last: its presence means "complete"
//! <prefix>/<name>/checkpoint.json          while a backup runs in slices (removed at the end)
//! <prefix>/<name>/parts/<kind>-<seq>.jsonl.zst   zstd-compressed JSON Lines, one item a line
//! <blob prefix>/<sha256 of the program JSON>.json.zst   the program JSON, zstd-compressed
//! ```
//!
//! A line is `{"item": {"pk", "sk", "attrs"}, "blob"?: {"sha256", "size"}}`: the item exactly as
//! the item store holds it (so every kind, known or not, is restored verbatim) and, for a
//! program, the content hash of its JSON in the shared blob pool. The pool is addressed by the
//! SHA-256 of the *decoded* program JSON: backups of the same program share one copy (later
//! backups copy only new programs), the pool does not depend on the source's compression or
//! encryption keys, and a restore re-encodes for the target store's configuration.

use std::io::{BufRead, Write};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::{BlobStore, Item, MultipartUpload, MIN_MULTIPART_PART};
use crate::error::{Error, Result};
use crate::model::keys::EntityKind;

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// A program's JSON in the blob pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// SHA-256 (hex) of the program JSON (the record's `blob.sha256`).
    pub sha256: String,
    /// Length of the program JSON.
    pub size: u64,
}

/// One line of a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub item: Item,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// One part as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// Key relative to the backup's folder (`parts/programs-00001.jsonl.zst`).
    pub key: String,
    pub kind: EntityKind,
    pub records: u64,
    /// Length of the compressed part.
    pub bytes: u64,
    /// SHA-256 (hex) of the compressed part.
    pub sha256: String,
}

/// A program that is not in the backup, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

/// Counts of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub programs: u64,
    pub version_claims: u64,
    pub signature_heads: u64,
    pub tags: u64,
    pub metrics: u64,
    pub optimization_runs: u64,
    pub other: u64,
    /// Alias policies and alias history entries.
    #[serde(default)]
    pub alias_policies: u64,
    #[serde(default)]
    pub alias_history: u64,
    /// Program blobs copied into the pool by this backup (the others were there already).
    pub blobs_copied: u64,
    /// Programs left out (blob missing, archived or failing its checksum), see `skipped`.
    pub skipped_programs: u64,
    /// Heads rewritten so that latest and aliases point only at programs in the backup
    /// (programs stored or deleted while the backup ran).
    pub adjusted_heads: u64,
}

impl Counts {
    pub fn add(&mut self, kind: EntityKind, n: u64) {
        match kind {
            EntityKind::Program => self.programs += n,
            EntityKind::VersionClaim => self.version_claims += n,
            EntityKind::SignatureHead => self.signature_heads += n,
            EntityKind::Tag => self.tags += n,
            EntityKind::Metric => self.metrics += n,
            EntityKind::OptimizationRun => self.optimization_runs += n,
            EntityKind::Other => self.other += n,
            EntityKind::AliasPolicy => self.alias_policies += n,
            EntityKind::AliasHistory => self.alias_history += n,
            EntityKind::Idempotency
            | EntityKind::Status
            | EntityKind::Counter
            | EntityKind::TextIndex => {}
        }
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Version of dspy-storage that wrote the backup.
    pub tool_version: String,
    /// The backend it was taken from.
    pub source: String,
    pub counts: Counts,
    /// Bytes this backup stored: its parts plus the blobs it copied into the pool.
    pub size: u64,
    /// Where the program blobs are (relative to the backup store's root).
    pub blob_prefix: String,
    /// Parts in restore order.
    pub parts: Vec<PartInfo>,
    /// The first 100 programs left out.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

impl Manifest {
    /// Refuses a manifest this build cannot read.
    pub fn check_compatible(&self) -> Result<()> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(Error::Precondition(format!(
                "backup {} has format version {}, but this build of dspy-storage ({}) reads \
                 format versions 1 to {FORMAT_VERSION}: restore it with a newer dspy-storage",
                self.name,
                self.format_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok(())
    }
}

/// Validates a backup name: 1–100 characters of `A-Za-z0-9._-`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "backup name {name:?} must be 1-100 characters of A-Za-z0-9._- starting with a \
                 letter or digit"
            ),
        ))
    }
}

/// Writes one part: lines are compressed as they come; compressed output is uploaded in chunks
/// (a multipart upload once it passes `chunk_bytes`), so memory stays at about one chunk.
pub struct PartWriter {
    pub kind: EntityKind,
    /// Key relative to the backup folder.
    rel_key: String,
    key: String,
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    hasher: Sha256,
    records: u64,
    bytes: u64,
    chunk_bytes: usize,
    upload: Option<Box<dyn MultipartUpload>>,
}

impl PartWriter {
    pub fn new(kind: EntityKind, folder: &str, seq: u32, chunk_bytes: usize) -> Result<Self> {
        let rel_key = format!("parts/{}-{seq:05}.jsonl.zst", kind.as_str());
        Ok(PartWriter {
            kind,
            key: format!("{folder}{rel_key}"),
            rel_key,
            encoder: zstd::stream::write::Encoder::new(Vec::new(), 3)
                .map_err(|e| Error::Internal(format!("zstd: {e}")))?,
            hasher: Sha256::new(),
            records: 0,
            bytes: 0,
            chunk_bytes: chunk_bytes.max(MIN_MULTIPART_PART),
            upload: None,
        })
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub async fn write(&mut self, blobs: &dyn BlobStore, line: &Line) -> Result<()> {
        let mut text = serde_json::to_vec(line).expect("lines serialize");
        text.push(b'\n');
        self.encoder
            .write_all(&text)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        self.records += 1;
        if self.encoder.get_ref().len() >= self.chunk_bytes {
            let chunk = std::mem::take(self.encoder.get_mut());
            self.send_chunk(blobs, chunk).await?;
        }
        Ok(())
    }

    async fn send_chunk(&mut self, blobs: &dyn BlobStore, chunk: Vec<u8>) -> Result<()> {
        if self.upload.is_none() {
            match blobs.start_multipart(&self.key).await? {
                Some(u) => self.upload = Some(u),
                None => {
                    // No multipart capability: keep buffering (the part is written at the end).
                    *self.encoder.get_mut() = chunk;
                    self.chunk_bytes = usize::MAX;
                    return Ok(());
                }
            }
        }
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        let upload = self.upload.as_mut().expect("started");
        upload.write_part(Bytes::from(chunk)).await
    }

    /// Finishes the part and returns what the manifest says of it.
    pub async fn finish(self, blobs: &dyn BlobStore) -> Result<PartInfo> {
        let PartWriter {
            kind,
            rel_key,
            key,
            encoder,
            mut hasher,
            records,
            mut bytes,
            upload,
            ..
        } = self;
        let rest = encoder
            .finish()
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        hasher.update(&rest);
        bytes += rest.len() as u64;
        let sha256 = hex::encode(hasher.finalize());
        match upload {
            None => blobs.put(&key, Bytes::from(rest), &sha256).await?,
            Some(mut upload) => {
                let res = async {
                    upload.write_part(Bytes::from(rest)).await?;
                    Ok::<_, Error>(())
                }
                .await;
                match res {
                    Ok(()) => upload.complete().await?,
                    Err(e) => {
                        let _ = upload.abort().await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(PartInfo {
            key: rel_key,
            kind,
            records,
            bytes,
            sha256,
        })
    }

    /// Abandons the part (nothing is left behind when the backend supports multipart).
    pub async fn abort(self) {
        if let Some(upload) = self.upload {
            let _ = upload.abort().await;
        }
    }
}

/// Reads a part and verifies its length and SHA-256 against the manifest before returning it.
pub async fn read_part(blobs: &dyn BlobStore, folder: &str, part: &PartInfo) -> Result<Bytes> {
    let key = format!("{folder}{}", part.key);
    let bytes = match blobs.get(&key).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => {
            return Err(Error::Integrity(format!(
                "backup part {} is missing",
                part.key
            )))
        }
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 != part.bytes || crate::blob::codec::sha256_hex(&bytes) != part.sha256 {
        return Err(Error::Integrity(format!(
            "backup part {} does not match its SHA-256 in the manifest: the backup is corrupted",
            part.key
        )));
    }
    Ok(bytes)
}

/// The lines of a verified part, decoded one at a time.
pub fn lines(part: &PartInfo, bytes: Bytes) -> Result<impl Iterator<Item = Result<Line>>> {
    let name = part.key.clone();
    let decoder = zstd::stream::read::Decoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::Integrity(format!("backup part {name}: {e}")))?;
    let reader = std::io::BufReader::new(decoder);
    Ok(reader.lines().enumerate().map(move |(i, line)| {
        let line =
            line.map_err(|e| Error::Integrity(format!("backup part {name} line {}: {e}", i + 1)))?;
        serde_json::from_str::<Line>(&line)
            .map_err(|e| Error::Integrity(format!("backup part {name} line {}: {e}", i + 1)))
    }))
}

/// Key of a program's JSON in the blob pool.
pub fn pool_key(blob_prefix: &str, sha256: &str) -> String {
    format!("{blob_prefix}{sha256}.json.zst")
}

/// Compresses a program's JSON for the pool.
pub fn pool_encode(json: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(json, 3).map_err(|e| Error::Internal(format!("zstd: {e}")))
}

/// Decompresses a pool blob and verifies it is the program JSON with this hash and length.
pub fn pool_decode(bytes: &[u8], blob: &BlobRef) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(blob.size.min(64 << 20) as usize);
    zstd::stream::read::Decoder::new(bytes)
        .and_then(|d| d.take(blob.size + 1).read_to_end(&mut out))
        .map_err(|e| {
            Error::Integrity(format!(
                "backup blob {} cannot be decompressed: {e}",
                blob.sha256
            ))
        })?;
    if out.len() as u64 != blob.size || crate::blob::codec::sha256_hex(&out) != blob.sha256 {
        return Err(Error::Integrity(format!(
            "backup blob {} does not match its SHA-256: the backup is corrupted",
            blob.sha256
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("daily-2026.11.25_1").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(101)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pool_round_trip_and_corruption() {
        let json = br#"{"a": 1}"#;
        let blob = BlobRef {
            sha256: crate::blob::codec::sha256_hex(json),
            size: json.len() as u64,
        };
        let enc = pool_encode(json).unwrap();
        assert_eq!(pool_decode(&enc, &blob).unwrap(), json);
        let other = BlobRef {
            sha256: "0".repeat(64),
            size: json.len() as u64,
        };
        assert!(matches!(
            pool_decode(&enc, &other),
            Err(Error::Integrity(_))
        ));
        assert!(matches!(
            pool_decode(b"junk", &blob),
            Err(Error::Integrity(_))
        ));
    }

    #[test]
    fn future_formats_are_refused() {
        let m = Manifest {
            format_version: FORMAT_VERSION + 1,
            backup_id: "x".into(),
            name: "n".into(),
            created_at: Utc::now(),
            finished_at: Utc::now(),
            tool_version: "9".into(),
            source: "s".into(),
            counts: Counts::default(),
            size: 0,
            blob_prefix: "b/".into(),
            parts: vec![],
            skipped: vec![],
        };
        let err = m.check_compatible().unwrap_err().to_string();
        assert!(err.contains("format version 2"), "{err}");
    }
}
