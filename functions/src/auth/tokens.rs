//! The token file of the local server (`dspy-storage serve --auth-file`): bearer tokens, kept as
//! their SHA-256, each with the principal it stands for.

use std::collections::{BTreeSet, HashMap};

use axum::http::HeaderMap;
use dspy_storage_core::blob::codec::sha256_hex;
use serde::Deserialize;

use super::{Principal, Role, Scope};

/// Tokens of the local server, from a TOML file of `[[token]]` tables:
///
/// ```toml
/// [[token]]
/// name = "ci"                      # optional, for the logs
/// sha256 = "9f86d081884c7d65…"     # hex SHA-256 of the bearer token
/// projects = ["team-a", "team-b"]  # or ["*"]
/// role = "writer"                  # reader | writer | admin
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    by_sha256: HashMap<String, Principal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    #[serde(default)]
    name: Option<String>,
    sha256: String,
    projects: Vec<String>,
    role: String,
}

impl TokenTable {
    pub fn from_toml(text: &str) -> Result<TokenTable, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| format!("auth file: {e}"))?;
        if file.token.is_empty() {
            return Err("auth file: no [[token]] table".into());
        }
        let mut table = TokenTable::default();
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            let hash = t.sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth file: token {n}: sha256 must be 64 hex digits (the SHA-256 of the token)"
                ));
            }
            let role = Role::parse(&t.role).ok_or_else(|| {
                format!("auth file: token {n}: role must be reader, writer or admin")
            })?;
            let scope =
                Scope::from_names(&t.projects).map_err(|e| format!("auth file: token {n}: {e}"))?;
            if scope == Scope::Only(BTreeSet::new()) {
                return Err(format!("auth file: token {n}: projects is empty"));
            }
            let principal = Principal::new(
                t.name
                    .map(|name| format!("token {name}"))
                    .unwrap_or_else(|| format!("token {}…", &hash[..12])),
                scope,
                role,
            );
            if table.by_sha256.insert(hash, principal).is_some() {
                return Err(format!(
                    "auth file: token {n}: the same sha256 appears twice"
                ));
            }
        }
        Ok(table)
    }

    pub fn load(path: &std::path::Path) -> Result<TokenTable, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        TokenTable::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Adds a token in the clear (tests, embedding).
    pub fn with_token(mut self, token: &str, principal: Principal) -> TokenTable {
        self.by_sha256
            .insert(sha256_hex(token.as_bytes()), principal);
        self
    }

    pub fn len(&self) -> usize {
        self.by_sha256.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sha256.is_empty()
    }

    pub(super) fn lookup(&self, token: &str) -> Option<&Principal> {
        self.by_sha256.get(&sha256_hex(token.as_bytes()))
    }
}

/// The token of an `Authorization: Bearer <token>` header (at most 4096 bytes).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_validated() {
        let h = sha256_hex(b"secret");
        let ok = format!("[[token]]\nsha256 = \"{h}\"\nprojects = [\"a\"]\nrole = \"writer\"\n");
        let t = TokenTable::from_toml(&ok).unwrap();
        assert_eq!(t.lookup("secret").unwrap().role, Role::Writer);
        assert!(t.lookup("other").is_none());
        for bad in [
            String::new(),
            ok.replace(&h, "abc"),
            ok.replace("writer", "root"),
            ok.replace("[\"a\"]", "[]"),
            ok.replace("[\"a\"]", "[\"../etc\"]"),
            format!("{ok}{ok}"),
            ok.replace("role", "rolle"),
        ] {
            assert!(TokenTable::from_toml(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "bearer   abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
