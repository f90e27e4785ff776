//! Configuration of the storage service, shared by the functions, the CLI and the tests.

use std::time::Duration;

use crate::blob::codec::{Codec, Compression, Keyring};
use crate::error::{Error, Result};

/// Default largest program body accepted: 5 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Compression of new blobs.
    pub compression: Compression,
    /// AES-256-GCM keys; when `encrypt` is on, new blobs are sealed with the current one.
    pub keyring: Keyring,
    pub encrypt: bool,
    /// How long an `Idempotency-Key` answer is kept.
    pub idempotency_ttl: Duration,
    /// How many times a conflicting or throttled write is retried before giving up.
    pub max_write_attempts: u32,
    /// Bytes of program JSON kept in memory by id (0 = off).
    pub program_cache_bytes: usize,
    /// How long a `latest` / alias resolution is reused (0 = off). Writes through the same
    /// process invalidate at once; writes through another process are seen after at most this.
    pub resolve_cache_ttl: Duration,
    /// S3 storage class of archived blobs: `GLACIER` (default) or `DEEP_ARCHIVE`.
    pub archive_storage_class: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            compression: Compression::Zstd,
            keyring: Keyring::default(),
            encrypt: false,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_write_attempts: 100,
            program_cache_bytes: 64 << 20,
            resolve_cache_ttl: Duration::from_secs(2),
            archive_storage_class: "GLACIER".into(),
        }
    }
}

impl StorageConfig {
    pub fn codec(&self) -> Codec {
        Codec {
            compression: self.compression,
            keyring: self.keyring.clone(),
            encrypt: self.encrypt,
        }
    }

    /// Turns encryption on with a key given as hex or base64 (e.g. from `DSPY_STORAGE_ENCRYPTION_KEY`).
    pub fn with_encryption_key(mut self, key_text: &str) -> Result<Self> {
        let key = Keyring::parse_key(key_text)?;
        let id = self.keyring.add(None, key);
        self.keyring.set_current(&id)?;
        self.encrypt = true;
        Ok(self)
    }
}

impl StorageConfig {
    /// Adds the keys of a key file (one 32-byte key per line, hex or base64; blank lines and
    /// `#` comments skipped) and encrypts new blobs with the FIRST: rotate by putting a new key
    /// on top and keeping the old ones below, so blobs sealed with them stay readable (each blob
    /// records its key's id).
    pub fn with_key_file(mut self, path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("encryption_key_file", format!("{}: {e}", path.display()))
        })?;
        let mut first = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = self.keyring.add(None, Keyring::parse_key(line)?);
            first.get_or_insert(id);
        }
        let first = first.ok_or_else(|| {
            Error::invalid(
                "encryption_key_file",
                format!("{} holds no key", path.display()),
            )
        })?;
        self.keyring.set_current(&first)?;
        self.encrypt = true;
        Ok(self)
    }
}

/// Parses a duration as the API writes them: `90d`, `12h`, `30m`, `45s`, `2w`.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(
            field,
            format!("{field} must be a duration like 90d, 12h, 30m, 45s or 2w, not {text:?}"),
        )
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("d", "90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            parse_duration("d", "30m").unwrap(),
            Duration::from_secs(1800)
        );
        assert!(parse_duration("d", "d").is_err());
        assert!(parse_duration("d", "10").is_err());
        assert!(parse_duration("d", "99999999999999999d").is_err());
    }
}
