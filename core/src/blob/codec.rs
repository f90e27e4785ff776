//! The blob codec: program JSON → compression → optional AES-256-GCM → stored bytes, with a
//! SHA-256 of the content and of the stored bytes. Every decode verifies both; any mismatch, a
//! missing key or a failed decryption is [`Error::Integrity`], never wrong data.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Magic prefix of an encrypted blob (format version 1): `DSE1 || nonce(12) || ciphertext+tag`.
const ENCRYPTED_MAGIC: &[u8; 4] = b"DSE1";
const NONCE_LEN: usize = 12;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compression applied to a program before it is (optionally) encrypted and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    Lz4,
    None,
}

impl Compression {
    /// File extension after `.json`: `zst`, `gz`, `lz4` or none.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "zst",
            Compression::Gzip => "gz",
            Compression::Lz4 => "lz4",
            Compression::None => "",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }

    fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        let internal = |e: std::io::Error| {
            Error::Internal(format!("{} compression failed: {e}", self.as_str()))
        };
        match self {
            Compression::Zstd => zstd::bulk::compress(data, 3).map_err(internal),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).map_err(internal)?;
                enc.finish().map_err(internal)
            }
            Compression::Lz4 => {
                let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
                enc.write_all(data).map_err(internal)?;
                enc.finish()
                    .map_err(|e| Error::Internal(format!("lz4 compression failed: {e}")))
            }
            Compression::None => Ok(data.to_vec()),
        }
    }

    /// Decompresses, refusing output larger than `expected_len` (a corrupted or hostile blob
    /// cannot make us allocate more than the record says the program is).
    fn decompress(self, data: &[u8], expected_len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(expected_len.min(64 << 20) as usize);
        // Saturating: a record claiming u64::MAX bytes must not overflow (found by fuzzing).
        let limit = expected_len.saturating_add(1);
        let res = match self {
            Compression::Zstd => zstd::stream::read::Decoder::new(data)
                .and_then(|d| d.take(limit).read_to_end(&mut out)),
            Compression::Gzip => flate2::read::GzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out),
            Compression::Lz4 => lz4_flex::frame::FrameDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out),
            Compression::None => {
                out.extend_from_slice(data);
                Ok(out.len())
            }
        };
        res.map_err(|e| {
            Error::Integrity(format!(
                "stored program cannot be decompressed ({}): {e}",
                self.as_str()
            ))
        })?;
        if out.len() as u64 != expected_len {
            return Err(Error::Integrity(format!(
                "stored program decompresses to {} bytes, the record says {expected_len}",
                out.len()
            )));
        }
        Ok(out)
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" | "zst" => Ok(Compression::Zstd),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            other => Err(Error::invalid(
                "compression",
                format!("unknown compression {other:?} (zstd, gzip, lz4, none)"),
            )),
        }
    }
}

/// AES-256 keys by id. Blobs record the id of the key that sealed them, so keys can rotate: new
/// blobs use `current`, old ones are read with the key they name.
#[derive(Clone, Default)]
pub struct Keyring {
    current: Option<String>,
    keys: HashMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Adds a key; the id is derived from the key (`local-` + 16 hex digits of its SHA-256) unless
    /// given. The first key added becomes current.
    pub fn add(&mut self, id: Option<String>, key: [u8; 32]) -> String {
        let id = id.unwrap_or_else(|| format!("local-{}", &sha256_hex(&key)[..16]));
        if self.current.is_none() {
            self.current = Some(id.clone());
        }
        self.keys.insert(id.clone(), key);
        id
    }

    pub fn set_current(&mut self, id: &str) -> Result<()> {
        if !self.keys.contains_key(id) {
            return Err(Error::invalid(
                "encryption_key",
                format!("no key with id {id}"),
            ));
        }
        self.current = Some(id.to_owned());
        Ok(())
    }

    /// Parses a 32-byte key given as 64 hex digits or base64.
    pub fn parse_key(text: &str) -> Result<[u8; 32]> {
        use base64::Engine;
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or_else(|| {
                Error::invalid(
                    "encryption_key",
                    "the encryption key must be 32 bytes as hex or base64",
                )
            })?;
        bytes.try_into().map_err(|_| {
            Error::invalid(
                "encryption_key",
                "the encryption key must be exactly 32 bytes",
            )
        })
    }

    pub fn current(&self) -> Option<(&str, &[u8; 32])> {
        let id = self.current.as_deref()?;
        self.keys.get(id).map(|k| (id, k))
    }

    pub fn get(&self, id: &str) -> Option<&[u8; 32]> {
        self.keys.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How a blob was encoded: everything needed to decode and verify it. Kept in the program record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// Length of the program JSON in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the program JSON.
    pub sha256: String,
    /// Length of the stored bytes.
    pub stored_size: u64,
    /// SHA-256 (hex) of the stored bytes.
    pub stored_sha256: String,
    pub compression: Compression,
    /// Id of the key that encrypted the blob; `None` when stored unencrypted. With envelope
    /// encryption, the id of the master key that wrapped the blob's data key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Envelope encryption (see [`crate::blob::envelope`]): the blob's data key, wrapped by `key_id`
    /// (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_key: Option<String>,
}

/// Encodes and decodes program blobs.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    pub compression: Compression,
    pub keyring: Keyring,
    /// Encrypt new blobs with the keyring's current key.
    pub encrypt: bool,
}

impl Codec {
    pub fn new(compression: Compression) -> Self {
        Codec {
            compression,
            keyring: Keyring::default(),
            encrypt: false,
        }
    }

    pub fn with_key(mut self, key: [u8; 32]) -> Self {
        self.keyring.add(None, key);
        self.encrypt = true;
        self
    }

    /// Encodes program JSON into stored bytes.
    pub fn encode(&self, json: &[u8]) -> Result<(Vec<u8>, BlobInfo)> {
        let sha256 = sha256_hex(json);
        let compressed = self.compression.compress(json)?;
        let (stored, key_id) = if self.encrypt {
            let (id, key) = self.keyring.current().ok_or_else(|| {
                Error::Internal("encryption is on but no key is configured".into())
            })?;
            (
                seal(key, &compressed, sha256.as_bytes())?,
                Some(id.to_owned()),
            )
        } else {
            (compressed, None)
        };
        let info = BlobInfo {
            size: json.len() as u64,
            sha256,
            stored_size: stored.len() as u64,
            stored_sha256: sha256_hex(&stored),
            compression: self.compression,
            key_id,
            wrapped_key: None,
        };
        Ok((stored, info))
    }

    /// Encodes program JSON sealed with an envelope data key (the key's id and wrapped form go
    /// into the blob's info).
    pub fn encode_with(
        &self,
        json: &[u8],
        key: &crate::blob::envelope::DataKey,
    ) -> Result<(Vec<u8>, BlobInfo)> {
        use base64::Engine;
        let sha256 = sha256_hex(json);
        let compressed = self.compression.compress(json)?;
        let stored = seal(&key.plaintext, &compressed, sha256.as_bytes())?;
        let info = BlobInfo {
            size: json.len() as u64,
            sha256,
            stored_size: stored.len() as u64,
            stored_sha256: sha256_hex(&stored),
            compression: self.compression,
            key_id: Some(key.key_id.clone()),
            wrapped_key: Some(base64::engine::general_purpose::STANDARD.encode(&key.wrapped)),
        };
        Ok((stored, info))
    }

    /// The wrapped data key of an envelope-encrypted blob (`None` for other blobs).
    pub fn wrapped_key(info: &BlobInfo) -> Result<Option<Vec<u8>>> {
        use base64::Engine;
        info.wrapped_key
            .as_deref()
            .map(|w| {
                base64::engine::general_purpose::STANDARD
                    .decode(w)
                    .map_err(|_| {
                        Error::Integrity("the program's wrapped data key is not base64".into())
                    })
            })
            .transpose()
    }

    /// Decodes an envelope-encrypted blob with its unwrapped data key, verifying every checksum.
    pub fn decode_with(&self, stored: &[u8], info: &BlobInfo, key: &[u8; 32]) -> Result<Vec<u8>> {
        self.verify_stored(stored, info)?;
        let compressed = open(key, stored, info.sha256.as_bytes())?;
        self.finish_decode(&compressed, info)
    }

    fn verify_stored(&self, stored: &[u8], info: &BlobInfo) -> Result<()> {
        if stored.len() as u64 != info.stored_size || sha256_hex(stored) != info.stored_sha256 {
            return Err(Error::Integrity(
                "stored bytes do not match their SHA-256: the blob is corrupted".into(),
            ));
        }
        Ok(())
    }

    fn finish_decode(&self, compressed: &[u8], info: &BlobInfo) -> Result<Vec<u8>> {
        let json = info.compression.decompress(compressed, info.size)?;
        if sha256_hex(&json) != info.sha256 {
            return Err(Error::Integrity(
                "program content does not match its SHA-256".into(),
            ));
        }
        Ok(json)
    }

    /// Decodes stored bytes back into the program JSON, verifying every checksum.
    pub fn decode(&self, stored: &[u8], info: &BlobInfo) -> Result<Vec<u8>> {
        self.verify_stored(stored, info)?;
        if info.wrapped_key.is_some() {
            return Err(Error::Integrity(format!(
                "the program is envelope-encrypted under key {}, and no key service is configured",
                info.key_id.as_deref().unwrap_or("?")
            )));
        }
        let compressed = match &info.key_id {
            Some(id) => {
                let key = self.keyring.get(id).ok_or_else(|| {
                    Error::Integrity(format!(
                        "the program is encrypted with key {id}, which is not configured"
                    ))
                })?;
                open(key, stored, info.sha256.as_bytes())?
            }
            None => stored.to_vec(),
        };
        self.finish_decode(&compressed, info)
    }
}

fn seal(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| Error::Internal("encryption failed".into()))?;
    let mut out = Vec::with_capacity(4 + NONCE_LEN + ct.len());
    out.extend_from_slice(ENCRYPTED_MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < 4 + NONCE_LEN + 16 || &sealed[..4] != ENCRYPTED_MAGIC {
        return Err(Error::Integrity(
            "stored program is not a valid encrypted blob".into(),
        ));
    }
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            Nonce::from_slice(&sealed[4..4 + NONCE_LEN]),
            Payload {
                msg: &sealed[4 + NONCE_LEN..],
                aad,
            },
        )
        .map_err(|_| Error::Integrity("stored program cannot be decrypted with its key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 4] = [
        Compression::Zstd,
        Compression::Gzip,
        Compression::Lz4,
        Compression::None,
    ];

    #[test]
    fn round_trips_every_codec_with_and_without_encryption() {
        let json = br#"{"z": 1, "a": [1, 2, {"b": "text"}]}"#;
        for c in ALL {
            for encrypt in [false, true] {
                let mut codec = Codec::new(c);
                if encrypt {
                    codec = codec.with_key([7u8; 32]);
                }
                let (stored, info) = codec.encode(json).unwrap();
                assert_eq!(info.key_id.is_some(), encrypt);
                assert_eq!(codec.decode(&stored, &info).unwrap(), json);
            }
        }
    }

    #[test]
    fn corruption_is_an_integrity_error() {
        for c in ALL {
            let codec = Codec::new(c).with_key([1u8; 32]);
            let (mut stored, info) = codec.encode(b"{\"k\": \"value\"}").unwrap();
            let last = stored.len() - 1;
            stored[last] ^= 1;
            assert!(matches!(
                codec.decode(&stored, &info),
                Err(Error::Integrity(_))
            ));
        }
    }

    #[test]
    fn wrong_or_missing_key_is_an_integrity_error() {
        let codec = Codec::new(Compression::Zstd).with_key([1u8; 32]);
        let (stored, info) = codec.encode(b"[1,2,3]").unwrap();
        let other = Codec::new(Compression::Zstd).with_key([2u8; 32]);
        assert!(matches!(
            other.decode(&stored, &info),
            Err(Error::Integrity(_))
        ));
        // Same key id but different key material (a forged record): decryption fails.
        let mut forged = Codec::new(Compression::Zstd);
        forged.keyring.add(info.key_id.clone(), [3u8; 32]);
        assert!(matches!(
            forged.decode(&stored, &info),
            Err(Error::Integrity(_))
        ));
        assert!(matches!(
            Codec::default().decode(&stored, &info),
            Err(Error::Integrity(_))
        ));
    }

    #[test]
    fn a_record_with_a_lying_size_is_refused() {
        let codec = Codec::new(Compression::Gzip);
        let (stored, mut info) = codec.encode(b"{\"a\":1}").unwrap();
        info.size -= 1;
        assert!(matches!(
            codec.decode(&stored, &info),
            Err(Error::Integrity(_))
        ));
    }

    #[test]
    fn a_record_claiming_the_largest_size_is_refused_not_a_panic() {
        // Found by the blob codec fuzz target: `expected_len + 1` overflowed.
        for c in ALL {
            let codec = Codec::new(c);
            let (stored, mut info) = codec.encode(b"{}").unwrap();
            info.size = u64::MAX;
            assert!(matches!(
                codec.decode(&stored, &info),
                Err(Error::Integrity(_))
            ));
        }
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex_key = "00".repeat(32);
        assert_eq!(Keyring::parse_key(&hex_key).unwrap(), [0u8; 32]);
        assert_eq!(
            Keyring::parse_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
            [0u8; 32]
        );
        assert!(Keyring::parse_key("short").is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), ci in 0usize..4, encrypt: bool) {
            let mut codec = Codec::new(ALL[ci]);
            if encrypt { codec = codec.with_key([9u8; 32]); }
            let (stored, info) = codec.encode(&data).unwrap();
            prop_assert_eq!(codec.decode(&stored, &info).unwrap(), data);
        }

        #[test]
        fn any_corruption_is_detected(data in proptest::collection::vec(any::<u8>(), 1..512), flip in any::<usize>(), ci in 0usize..4) {
            let codec = Codec::new(ALL[ci]);
            let (mut stored, info) = codec.encode(&data).unwrap();
            if !stored.is_empty() {
                let i = flip % stored.len();
                stored[i] ^= 0x55;
                prop_assert!(matches!(codec.decode(&stored, &info), Err(Error::Integrity(_))));
            }
        }
    }
}
