//! The records kept in the item store and how each maps to an [`Item`] (keys from [`crate::model::keys`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::{attr, Condition, Index, Item};
use crate::blob::codec::BlobInfo;
use crate::domain::{ProgramId, ProgramStatus, Project, Signature, Version};
use crate::error::{Error, Result};
use crate::model::keys;

fn to_data<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize")
}

/// Decodes the `data` attribute of an item into a record.
pub fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T> {
    let data = item
        .data()
        .ok_or_else(|| Error::Internal(format!("item {}/{} has no data", item.pk, item.sk)))?;
    serde_json::from_str(data)
        .map_err(|e| Error::Internal(format!("item {}/{} is unreadable: {e}", item.pk, item.sk)))
}

/// A stored program: everything but the program JSON itself, which lives in the blob store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramRecord {
    pub id: ProgramId,
    pub project: Project,
    pub signature: Signature,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The metadata as the client sent it, with `signature`, `version` and `project` resolved.
    pub metadata: Map<String, Value>,
    pub primary_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_method: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub blob_key: String,
    pub blob: BlobInfo,
    pub status: ProgramStatus,
    /// The signature's latest version when this one was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<Version>,
    /// The predictor layout of the program, recorded on store (absent on older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::dspy::PredictorLayout>,
    /// When the program last came back from the archive (retention counts archive age from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<DateTime<Utc>>,
}

impl ProgramRecord {
    pub fn signature_pk(&self) -> String {
        keys::signature_pk(&self.project, &self.signature)
    }

    /// The program item with its index keys: by signature and creation (GSI1), by signature and
    /// score (GSI2), by optimization method (GSI3), by project (GSI4).
    pub fn to_item(&self) -> Item {
        let created = keys::created_sk(&self.created_at, &self.id);
        let mut item = Item::new(keys::program_pk(&self.id), keys::PROG_SK)
            .with(attr::DATA, to_data(self))
            .with(attr::REV, crate::domain::format_time(&self.updated_at))
            .with(Index::Gsi1.pk_attr(), self.signature_pk())
            .with(Index::Gsi1.sk_attr(), created.clone())
            .with(Index::Gsi2.pk_attr(), self.signature_pk())
            .with(
                Index::Gsi2.sk_attr(),
                keys::score_sk(self.primary_score, &self.id),
            )
            .with(Index::Gsi4.pk_attr(), keys::project_pk(&self.project))
            .with(Index::Gsi4.sk_attr(), created.clone());
        if let Some(method) = &self.optimization_method {
            item = item
                .with(
                    Index::Gsi3.pk_attr(),
                    keys::method_pk(&self.project, method),
                )
                .with(Index::Gsi3.sk_attr(), created);
        }
        item
    }

    /// One entry item per tag: `TAG#<project>#<tag>` / `<created>#<id>`.
    pub fn tag_items(&self) -> Vec<Item> {
        self.tags
            .iter()
            .map(|tag| {
                Item::new(
                    keys::tag_pk(&self.project, tag),
                    keys::created_sk(&self.created_at, &self.id),
                )
                .with("id", self.id.to_string())
            })
            .collect()
    }

    pub fn version_claim(&self) -> VersionClaim {
        VersionClaim {
            id: self.id,
            version: self.version.clone(),
            created_at: self.created_at,
            performance: self.primary_score,
            size: self.blob.size,
            optimization_method: self.optimization_method.clone(),
            tags: self.tags.clone(),
            blob: Some(self.blob_pointer()),
        }
    }

    /// Where this program's blob is and its checksum, for heads, claims and alias targets.
    pub fn blob_pointer(&self) -> BlobPointer {
        BlobPointer {
            key: self.blob_key.clone(),
            sha256: self.blob.sha256.clone(),
        }
    }

    pub fn environment(&self) -> Option<&str> {
        self.metadata.get("environment").and_then(Value::as_str)
    }
}

/// `SIG#<project>#<signature>` / `VER#<sortable version>`: makes a version unique (conditional
/// put) and lists a signature's versions in semver order with one range read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionClaim {
    pub id: ProgramId,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub performance: Option<f64>,
    pub size: u64,
    /// The program's `optimization_method` (absent in claims written before it was copied here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_method: Option<String>,
    /// The program's tags, kept equal to the record's by every metadata update (absent in claims
    /// written before they were copied here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The program's blob (absent in claims written before it was copied here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobPointer>,
}

/// Where a program's blob is (`blob_key`) and the SHA-256 of its JSON, copied from its record
/// into the items that resolve to it (the head's latest, version claims, alias targets): a load
/// by version or alias fetches the blob while it reads the record, instead of after. A copy is a
/// hint: the load uses the blob only when the record it reads at the same time names the same
/// key and checksum (otherwise it reads the record's blob, one round trip later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobPointer {
    pub key: String,
    pub sha256: String,
}

impl VersionClaim {
    pub fn to_item(&self, project: &Project, signature: &Signature) -> Item {
        Item::new(
            keys::signature_pk(project, signature),
            keys::version_sk(&self.version),
        )
        .with(attr::DATA, to_data(self))
        .with("id", self.id.to_string())
    }
}

/// A named pointer to a version of a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasTarget {
    pub version: Version,
    pub id: ProgramId,
    pub updated_at: DateTime<Utc>,
    /// The target's blob (absent in targets set before it was copied here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobPointer>,
}

/// `SIG#<project>#<signature>` / `HEAD`: the signature's latest version, counts and aliases. Every
/// change of a signature's versions or aliases is a compare-and-set on its `rev`, so concurrent
/// writers serialize here and never both win.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureHead {
    pub project: Project,
    pub signature: Signature,
    pub latest_version: Version,
    pub latest_id: ProgramId,
    /// The latest version's blob (absent in heads written before it was copied here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_blob: Option<BlobPointer>,
    pub versions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_performance: Option<f64>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasTarget>,
    pub rev: u64,
}

impl SignatureHead {
    pub fn to_item(&self) -> Item {
        Item::new(
            keys::signature_pk(&self.project, &self.signature),
            keys::HEAD_SK,
        )
        .with(attr::DATA, to_data(self))
        .with(attr::REV, self.rev.to_string())
        .with(
            Index::Gsi4.pk_attr(),
            keys::project_signatures_pk(&self.project),
        )
        .with(Index::Gsi4.sk_attr(), self.signature.as_str())
        .with(
            Index::Gsi3.pk_attr(),
            keys::project_signatures_by_update_pk(&self.project),
        )
        .with(
            Index::Gsi3.sk_attr(),
            keys::signature_updated_sk(&self.updated_at, &self.signature),
        )
    }
}

/// `IDEM#<key>` / `IDEM`: the first answer to a request made with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// SHA-256 of the request (method, path and body), to refuse a key reused for another request.
    pub request_sha256: String,
    pub response: Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl IdempotencyRecord {
    pub fn to_item(&self) -> Item {
        Item::new(keys::idempotency_pk(&self.key), keys::IDEM_SK)
            .with(attr::DATA, to_data(self))
            .with("expires_at", self.expires_at.timestamp().to_string())
    }
}

/// The condition that a signature's head is still at `head`'s revision (every change to a
/// signature's versions or aliases is conditioned on it).
pub(crate) fn rev_of(head: &SignatureHead) -> Condition {
    Condition::AttrEquals(attr::REV.into(), head.rev.to_string())
}

/// The aliases of a head grouped by the version they point at.
pub fn aliases_by_version(head: Option<&SignatureHead>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(h) = head {
        for (name, t) in &h.aliases {
            out.entry(t.version.to_string())
                .or_default()
                .push(name.clone());
        }
    }
    out
}
