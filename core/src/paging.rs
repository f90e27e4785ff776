//! Paging: page limits ([`page_limit`], at most [`MAX_PAGE`] items a page) and the one cursor
//! codec.
//!
//! Cursors: the continuation tokens of every listing — search pages, version and signature
//! pages, metric history, optimization-run pages, cleanup slices — are sealed and opened HERE and
//! nowhere else ([`seal`], [`open`]); each listing's codec only chooses what its body holds and
//! checks that the opened body belongs to the request.
//!
//! A cursor is `base64url(envelope) "." base64url(tag)`: the envelope is JSON `{"k": kind, "p":
//! principal, "t": issued at (unix seconds), "b": body}` and the tag its HMAC-SHA256 under the
//! service's secret ([`CursorKeys`]). `p` is a hash of the id of the principal the cursor was
//! given to (`anonymous` when access control is off), so a cursor works only for its caller.
//! Every way a cursor fails is a `400` on the field `cursor` saying which: malformed, altered
//! (or not issued by this service), of another kind of listing, issued to another caller,
//! expired (older than [`CURSOR_TTL`]); the codecs add "of another search / listing".
//!
//! The secret: the local server keeps it in its data directory ([`CursorKeys::load_or_create`],
//! file mode 0600; [`CursorKeys::rotate_file`] rotates it); the Lambda functions read it once per
//! cold start from a Secrets Manager secret ([`CursorKeys::from_secrets_manager`]). After a
//! rotation the previous secret is still accepted for one cursor lifetime, so no cursor handed
//! out before the change breaks.

use std::path::Path;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::Principal;
use crate::backend::{attr, Index, PageKey};
use crate::domain::{format_time, parse_time};
use crate::error::{Error, Result};

/// Most items one page may ask for.
pub const MAX_PAGE: usize = 1000;

/// A page's size: `limit`, 100 when not given; `400` outside `1..=MAX_PAGE`.
pub fn page_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(100),
        Some(0) => Err(Error::invalid("limit", "limit must be at least 1")),
        Some(n) if n > MAX_PAGE => Err(Error::invalid(
            "limit",
            format!("limit must be at most {MAX_PAGE}"),
        )),
        Some(n) => Ok(n),
    }
}

/// Whether `key` is a position in `index`'s partition `pk`: exactly the table's key attributes
/// (and the index's, for an index), with the partition's key. Every codec checks a key it
/// opened with this before reading from it.
pub fn is_page_key_of(key: &PageKey, index: Index, pk: Option<&str>) -> bool {
    let mut expected = vec![attr::PK, attr::SK];
    if index != Index::Table {
        expected.extend([index.pk_attr(), index.sk_attr()]);
    }
    expected.sort_unstable();
    let names: Vec<&str> = key.keys().map(String::as_str).collect();
    if names != expected {
        return false;
    }
    let key_pk = if index == Index::Table {
        attr::PK
    } else {
        index.pk_attr()
    };
    match pk {
        None => true,
        Some(pk) => key.get(key_pk).map(String::as_str) == Some(pk),
    }
}

/// How long a cursor works, and how long the previous secret is accepted after a rotation.
pub const CURSOR_TTL: Duration = Duration::hours(24);
/// Clock skew tolerated between the servers that issue and read a cursor.
const SKEW_SECS: i64 = 300;
/// Longest cursor accepted.
pub const MAX_CURSOR_LEN: usize = 8192;
/// Domain separation of the MAC (a tag of this service's cursors is no other MAC's).
const DOMAIN: &[u8] = b"dspy-storage cursor v2\0";
/// Shortest secret accepted.
const MIN_SECRET_BYTES: usize = 16;

/// The name of the secret file in the local server's data directory.
pub const SECRET_FILE: &str = "cursor-secret";

/// The listing a cursor continues (a cursor of one kind is refused by the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET`/`POST /search`.
    Search,
    /// A page of one index partition: versions, signatures, optimization runs.
    Listing,
    /// A program's metric history.
    History,
    /// A cleanup run's next slice.
    Cleanup,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Search => "search",
            Kind::Listing => "listing",
            Kind::History => "history",
            Kind::Cleanup => "cleanup",
        }
    }
}

/// The secrets cursors are signed with: the current one signs and verifies; the previous one
/// (after a rotation) still verifies until [`CURSOR_TTL`] after the rotation.
#[derive(Clone)]
pub struct CursorKeys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
    /// When `current` replaced `previous`.
    rotated_at: Option<DateTime<Utc>>,
    /// Where the secret came from, for logs: `ephemeral`, a file, a secret ARN.
    source: String,
}

impl std::fmt::Debug for CursorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("CursorKeys")
            .field("source", &self.source)
            .field("previous", &self.previous.is_some())
            .field("rotated_at", &self.rotated_at)
            .finish()
    }
}

fn random_secret() -> Vec<u8> {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    hex::encode(key).into_bytes()
}

fn bad(message: impl Into<String>) -> Error {
    Error::invalid("cursor", message)
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    k: String,
    p: String,
    t: i64,
    b: T,
}

impl CursorKeys {
    /// A random secret of this process only: its cursors work in this process and nowhere else
    /// (tests, and processes that are given no secret).
    pub fn ephemeral() -> Self {
        CursorKeys {
            current: random_secret(),
            previous: None,
            rotated_at: None,
            source: "ephemeral".into(),
        }
    }

    /// From secrets in hand: `previous` is accepted until [`CURSOR_TTL`] after `rotated_at`
    /// (never without a rotation time).
    pub fn new(
        current: Vec<u8>,
        previous: Option<Vec<u8>>,
        rotated_at: Option<DateTime<Utc>>,
        source: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        for s in std::iter::once(&current).chain(previous.iter()) {
            if s.len() < MIN_SECRET_BYTES {
                return Err(Error::invalid(
                    "cursor_secret",
                    format!(
                        "the cursor secret of {source} is shorter than {MIN_SECRET_BYTES} bytes"
                    ),
                ));
            }
        }
        Ok(CursorKeys {
            current,
            previous,
            rotated_at,
            source,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the previous secret still verifies cursors at `now`.
    fn previous_valid(&self, now: DateTime<Utc>) -> bool {
        self.previous.is_some() && self.rotated_at.is_some_and(|t| now < t + CURSOR_TTL)
    }

    fn tag(key: &[u8], payload: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn verifies(key: &[u8], payload: &str, tag: &[u8]) -> bool {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac.verify_slice(tag).is_ok()
    }

    // ----- the local server: a file in the data directory ---------------------------------------

    /// The secret file at `path`, created (mode 0600, with a new random secret) when missing.
    /// Two processes creating it at once end up with the same secret (the file is created whole
    /// or not at all).
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::parse_file(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(path, e)),
        }
        let file = SecretFile {
            current: random_secret(),
            previous: None,
            rotated_at: None,
        };
        let tmp = temp_path(path);
        write_private(&tmp, &file.render())?;
        // A hard link creates `path` only if it does not exist, with the whole content.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => tracing::info!(path = %path.display(), "created the cursor secret"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(file_error(path, e)),
        }
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        Self::parse_file(path, &text)
    }

    /// Rotates the secret file at `path`: a new current secret, the old one kept as previous
    /// (still accepted for [`CURSOR_TTL`]). Running servers pick the new secret up when they
    /// start again; until then they keep signing with the old one, which the others accept.
    pub fn rotate_file(path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let old = SecretFile::parse(path, &text)?;
        let file = SecretFile {
            current: random_secret(),
            previous: Some(old.current),
            rotated_at: Some(crate::domain::now()),
        };
        let tmp = temp_path(path);
        write_private(&tmp, &file.render())?;
        std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))?;
        Ok(())
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the cursor secret file is readable by others; chmod 600 it");
                }
            }
        }
        let f = SecretFile::parse(path, text)?;
        Self::new(
            f.current,
            f.previous,
            f.rotated_at,
            path.display().to_string(),
        )
    }

    // ----- Lambda: a Secrets Manager secret -----------------------------------------------------

    /// The secret `arn` from Secrets Manager (a client built from `sdk`; `AWS_ENDPOINT_URL`
    /// honoured): its `AWSCURRENT` version signs, its `AWSPREVIOUS` version
    /// (if any) still verifies until [`CURSOR_TTL`] after the current version was created. Two
    /// `GetSecretValue` requests; the Lambda functions call this once per cold start.
    pub async fn from_secrets_manager(sdk: &aws_config::SdkConfig, arn: &str) -> Result<Self> {
        // Not behind the backend retry decorator: the SDK's standard retries are this call's one
        // retry layer.
        let client = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(sdk)
                .retry_config(aws_config::retry::RetryConfig::standard())
                .build(),
        );
        Self::from_secrets_client(&client, arn).await
    }

    /// [`Self::from_secrets_manager`] with a client in hand.
    pub async fn from_secrets_client(
        client: &aws_sdk_secretsmanager::Client,
        arn: &str,
    ) -> Result<Self> {
        let current = client
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| crate::backend::aws::classify_secrets("GetSecretValue", &e))?;
        let rotated_at = current
            .created_date()
            .and_then(|d| DateTime::from_timestamp(d.secs(), 0));
        let previous = match client
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSPREVIOUS")
            .send()
            .await
        {
            Ok(p) => secret_bytes(p.secret_string(), p.secret_binary()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                None
            }
            Err(e) => return Err(crate::backend::aws::classify_secrets("GetSecretValue", &e)),
        };
        let current = secret_bytes(current.secret_string(), current.secret_binary())
            .ok_or_else(|| Error::Unavailable(format!("the cursor secret {arn} has no value")))?;
        Self::new(current, previous, rotated_at, arn)
    }
}

fn secret_bytes(text: Option<&str>, binary: Option<&aws_smithy_types::Blob>) -> Option<Vec<u8>> {
    text.map(|s| s.as_bytes().to_vec())
        .or_else(|| binary.map(|b| b.as_ref().to_vec()))
        .filter(|v| !v.is_empty())
}

/// The secret file: `key = value` lines (`current`, `previous`, `rotated_at`), `#` comments.
struct SecretFile {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
    rotated_at: Option<DateTime<Utc>>,
}

impl SecretFile {
    fn parse(path: &Path, text: &str) -> Result<Self> {
        let bad = |m: &str| Error::invalid("cursor_secret", format!("{}: {m}", path.display()));
        let (mut current, mut previous, mut rotated_at) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad("expected `name = value` lines"))?;
            let v = v.trim().to_owned();
            match k.trim() {
                "current" => current = Some(v.into_bytes()),
                "previous" => previous = Some(v.into_bytes()),
                "rotated_at" => {
                    rotated_at = Some(
                        parse_time("rotated_at", &v)
                            .map_err(|_| bad("rotated_at is not an RFC 3339 time"))?,
                    )
                }
                other => return Err(bad(&format!("unknown name {other:?}"))),
            }
        }
        Ok(SecretFile {
            current: current.ok_or_else(|| bad("no `current` secret"))?,
            previous,
            rotated_at,
        })
    }

    fn render(&self) -> String {
        let mut s = String::from(
            "# dspy-storage: the secret cursors are signed with (HMAC-SHA256). Keep it private.\n\
             # Rotate with `dspy-storage rotate-cursor-secret`: the previous secret stays valid for\n\
             # 24 hours (a cursor's lifetime), so no cursor handed out before breaks.\n",
        );
        s.push_str(&format!(
            "current = {}\n",
            String::from_utf8_lossy(&self.current)
        ));
        if let Some(p) = &self.previous {
            s.push_str(&format!("previous = {}\n", String::from_utf8_lossy(p)));
        }
        if let Some(t) = &self.rotated_at {
            s.push_str(&format!("rotated_at = {}\n", format_time(t)));
        }
        s
    }
}

fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", uuid::Uuid::now_v7().simple()));
    path.with_file_name(name)
}

/// Writes a new file readable by its owner only (0600), synced.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| file_error(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| file_error(path, e))
}

fn file_error(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("cursor secret {}: {e}", path.display()))
}

/// What binds a cursor to its principal: a hash of the principal's id, projects and role (the id
/// is no secret, but a cursor need not carry it; two callers that happen to share a name but not
/// their projects still do not share cursors).
fn principal_tag(who: &Principal) -> String {
    let mut h = Sha256::new();
    h.update(who.id.as_bytes());
    h.update([0u8]);
    match &who.scope {
        crate::access::Scope::All => h.update(b"*"),
        crate::access::Scope::Only(set) => {
            for p in set {
                h.update(p.as_bytes());
                h.update([0u8]);
            }
        }
    }
    h.update([0u8]);
    h.update(who.role.as_str().as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// Seals `body` as a cursor of `kind` for `who`.
pub fn seal<T: Serialize>(keys: &CursorKeys, kind: Kind, who: &Principal, body: &T) -> String {
    let envelope = Envelope {
        k: kind.tag().to_owned(),
        p: principal_tag(who),
        t: Utc::now().timestamp(),
        b: body,
    };
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(serde_json::to_vec(&envelope).expect("cursors serialize"));
    let tag = b64.encode(CursorKeys::tag(&keys.current, &payload));
    format!("{payload}.{tag}")
}

/// Opens a cursor of `kind` presented by `who`: its body, or a `400` on `cursor` saying what is
/// wrong with it.
pub fn open<T: DeserializeOwned>(
    keys: &CursorKeys,
    kind: Kind,
    who: &Principal,
    cursor: &str,
) -> Result<T> {
    let malformed = || bad("the cursor is malformed: pass a next_cursor exactly as it was given");
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(bad(format!(
            "the cursor is longer than {MAX_CURSOR_LEN} characters: it is not one of this service's"
        )));
    }
    let (payload, tag) = cursor.rsplit_once('.').ok_or_else(malformed)?;
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let tag = b64.decode(tag).map_err(|_| malformed())?;
    let now = Utc::now();
    let signed_now = CursorKeys::verifies(&keys.current, payload, &tag)
        || (keys.previous_valid(now)
            && CursorKeys::verifies(keys.previous.as_deref().unwrap_or_default(), payload, &tag));
    if !signed_now {
        let retired = keys
            .previous
            .as_deref()
            .is_some_and(|p| CursorKeys::verifies(p, payload, &tag));
        return Err(bad(if retired {
            "the cursor was signed with a secret retired more than 24 hours ago; start the listing again"
        } else {
            "the cursor was altered, or was not signed with a secret this server knows"
        }));
    }
    let bytes = b64.decode(payload).map_err(|_| malformed())?;
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if envelope.k != kind.tag() {
        return Err(bad(format!(
            "the cursor belongs to another kind of listing (a {} cursor)",
            envelope.k
        )));
    }
    if envelope.p != principal_tag(who) {
        return Err(bad("the cursor was issued to another caller"));
    }
    let age = now.timestamp() - envelope.t;
    if age > CURSOR_TTL.num_seconds() {
        return Err(bad(
            "the cursor has expired (cursors last 24 hours); start the listing again",
        ));
    }
    if age < -SKEW_SECS {
        return Err(bad(
            "the cursor was issued in the future: the clocks of the servers disagree",
        ));
    }
    serde_json::from_value(envelope.b).map_err(|_| malformed())
}

#[derive(Serialize, Deserialize)]
struct CursorBody {
    /// Index the cursor belongs to.
    i: String,
    /// Partition the cursor belongs to.
    p: String,
    /// Last key read.
    k: PageKey,
}

/// Where a listing of one index partition stopped, as a cursor for `who` (signed: see
/// [`crate::paging`]).
pub fn encode_cursor(
    keys: &CursorKeys,
    who: &Principal,
    index: Index,
    pk: &str,
    key: &PageKey,
) -> String {
    let body = CursorBody {
        i: index.name().into(),
        p: pk.into(),
        k: key.clone(),
    };
    seal(keys, Kind::Listing, who, &body)
}

/// Opens a listing cursor presented by `who`, refusing one that was not made for this listing
/// (`400`).
pub fn decode_cursor(
    keys: &CursorKeys,
    who: &Principal,
    cursor: &str,
    index: Index,
    pk: &str,
) -> Result<PageKey> {
    let other = || Error::invalid("cursor", "the cursor belongs to another listing");
    let body: CursorBody = open(keys, Kind::Listing, who, cursor)?;
    if body.i != index.name() || body.p != pk {
        return Err(other());
    }
    if !is_page_key_of(&body.k, index, Some(pk)) {
        return Err(other());
    }
    Ok(body.k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Role, Scope};

    fn who(id: &str) -> Principal {
        Principal::new(id, Scope::All, Role::Reader)
    }

    fn err(r: Result<u32>) -> String {
        match r {
            Err(Error::InvalidInput { field, message }) => {
                assert_eq!(field.as_deref(), Some("cursor"));
                message
            }
            other => panic!("expected a 400 on cursor, got {other:?}"),
        }
    }

    #[test]
    fn a_cursor_opens_for_its_caller_and_kind_only() {
        let keys = CursorKeys::ephemeral();
        let c = seal(&keys, Kind::Search, &who("a"), &7u32);
        assert_eq!(open::<u32>(&keys, Kind::Search, &who("a"), &c).unwrap(), 7);
        assert!(err(open(&keys, Kind::Search, &who("b"), &c)).contains("another caller"));
        assert!(err(open(&keys, Kind::History, &who("a"), &c)).contains("another kind"));
        assert!(
            err(open(&CursorKeys::ephemeral(), Kind::Search, &who("a"), &c)).contains("altered")
        );
        assert!(err(open(&keys, Kind::Search, &who("a"), "x")).contains("malformed"));
        // One byte changed anywhere.
        for i in 0..c.len() {
            let mut b = c.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(b).unwrap();
            if altered != c {
                assert!(open::<u32>(&keys, Kind::Search, &who("a"), &altered).is_err());
            }
        }
    }

    #[test]
    fn expired_and_rotated_secrets() {
        let keys = CursorKeys::ephemeral();
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let old = Envelope {
            k: "search".to_owned(),
            p: principal_tag(&who("a")),
            t: Utc::now().timestamp() - CURSOR_TTL.num_seconds() - 10,
            b: 1u32,
        };
        let payload = b64.encode(serde_json::to_vec(&old).unwrap());
        let c = format!(
            "{payload}.{}",
            b64.encode(CursorKeys::tag(&keys.current, &payload))
        );
        assert!(err(open(&keys, Kind::Search, &who("a"), &c)).contains("expired"));

        let before = CursorKeys::new(b"0123456789abcdef-old".to_vec(), None, None, "t").unwrap();
        let c = seal(&before, Kind::Listing, &who("a"), &5u32);
        let rotated = |at| {
            CursorKeys::new(
                b"0123456789abcdef-new".to_vec(),
                Some(b"0123456789abcdef-old".to_vec()),
                Some(at),
                "t",
            )
            .unwrap()
        };
        let fresh = rotated(Utc::now() - Duration::hours(1));
        assert_eq!(
            open::<u32>(&fresh, Kind::Listing, &who("a"), &c).unwrap(),
            5
        );
        let stale = rotated(Utc::now() - CURSOR_TTL - Duration::minutes(1));
        assert!(err(open(&stale, Kind::Listing, &who("a"), &c)).contains("retired"));
        assert!(CursorKeys::new(b"short".to_vec(), None, None, "t").is_err());
    }

    #[test]
    fn the_secret_file_is_private_created_once_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        let a = CursorKeys::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = CursorKeys::load_or_create(&path).unwrap();
        assert_eq!(a.current, b.current, "created once");
        let c = seal(&a, Kind::History, &who("x"), &"k");
        CursorKeys::rotate_file(&path).unwrap();
        let r = CursorKeys::load_or_create(&path).unwrap();
        assert_ne!(r.current, a.current);
        assert_eq!(
            open::<String>(&r, Kind::History, &who("x"), &c).unwrap(),
            "k"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
