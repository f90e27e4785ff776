//! Storing a program: the blob and the text index entries, then ONE conditional transaction
//! (record, version claim, head, tag entries, counters); idempotency keys; what a failed store
//! leaves (nothing visible).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{value::RawValue, Value};

use crate::access::Principal;
use crate::backend::{Condition, WriteOp};
use crate::domain::{format_time, NewMetadata, ProgramId, ProgramStatus, Version};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::{from_item, IdempotencyRecord, ProgramRecord, SignatureHead};

/// What a store answers (`201` body).
use super::{max_score, Draft, Idempotency, IdempotentState, Storage, StoreOutcome, StoredProgram};
use crate::retry::backoff;

impl Storage {
    /// Stores a program. `program` is the program's JSON text exactly as received; it goes into
    /// `metadata.project`, which `who` must see.
    pub async fn store(
        &self,
        who: &Principal,
        program: &RawValue,
        metadata: NewMetadata,
        idempotency: Option<Idempotency>,
    ) -> Result<StoreOutcome> {
        who.see_project(&metadata.project)?;
        let now = crate::domain::now();
        let mut idempotency = idempotency;
        if let Some(idem) = &mut idempotency {
            match self.idempotent_answer(idem, now).await? {
                IdempotentState::Answered(stored) => {
                    return Ok(StoreOutcome {
                        stored,
                        replayed: true,
                    })
                }
                IdempotentState::Expired(expires_at) => idem.expired_record = Some(expires_at),
                IdempotentState::Unused => {}
            }
        }

        let json = program.get().as_bytes();
        let (stored_bytes, blob) = self.encode_blob(json).await?;
        let id = ProgramId::new();
        let created_at = metadata.created_at.unwrap_or(now);
        let blob_key = keys::blob_key(&created_at, &id, blob.compression.extension());
        // The program's text index entries: written before its record, so the program is
        // found by search once the store returns (see `text_index`).
        let entries = crate::model::text::index_items_of(
            &metadata.project,
            &id,
            metadata.signature.as_str(),
            &metadata.tags,
            &metadata.map,
        );
        // The blob upload, the head read the commit builds on and the index entries go out
        // together.
        let sig_pk = keys::signature_pk(&metadata.project, &metadata.signature);
        let (put, head, indexed) = tokio::join!(
            self.blobs
                .put(&blob_key, Bytes::from(stored_bytes), &blob.stored_sha256),
            self.items.get(&sig_pk, keys::HEAD_SK),
            self.put_text_entries(entries.clone())
        );
        let head = match put
            .and(indexed)
            .and_then(|()| head.and_then(|h| h.as_ref().map(from_item).transpose()))
        {
            Ok(h) => h,
            Err(e) => {
                if let Err(d) = self.blobs.delete(&blob_key).await {
                    tracing::warn!(blob_key, error = %d, "could not remove the blob of a failed store");
                }
                self.remove_text_entries(entries).await;
                return Err(e);
            }
        };

        let draft = Draft {
            id,
            project: metadata.project,
            signature: metadata.signature,
            version: metadata.version,
            created_at,
            metadata: metadata.map,
            primary_score: metadata.primary_score,
            optimization_method: metadata.optimization_method,
            tags: metadata.tags,
            blob_key: blob_key.clone(),
            blob,
            rollback_to: None,
            layout: Some(crate::dspy::PredictorLayout::of_json_text(program.get())),
        };
        let result = self
            .commit_new_program(draft, now, idempotency.as_ref(), Some(head))
            .await;
        match result {
            Ok(stored) => Ok(StoreOutcome {
                stored,
                replayed: false,
            }),
            Err(err) => {
                // A transient error may hide a commit that happened (a timeout): then the program
                // is stored, and its blob must stay.
                match self.committed_despite(&err, &id).await {
                    Some(Ok(stored)) => {
                        return Ok(StoreOutcome {
                            stored,
                            replayed: false,
                        })
                    }
                    Some(Err(())) => return Err(err),
                    None => {}
                }
                // Nothing refers to the blob: remove it (cleanup collects it if this fails too),
                // and the entries (a left-over one only costs a search a record read).
                if let Err(e) = self.blobs.delete(&blob_key).await {
                    tracing::warn!(blob_key, error = %e, "could not remove the blob of a failed store");
                }
                self.remove_text_entries(entries).await;
                match (err, &idempotency) {
                    // A concurrent request with the same key won: answer as it did.
                    (Error::ConditionFailed { .. }, Some(idem)) => {
                        match self.idempotent_answer(idem, now).await? {
                            IdempotentState::Answered(stored) => Ok(StoreOutcome {
                                stored,
                                replayed: true,
                            }),
                            _ => Err(Error::Unavailable("store did not complete; retry".into())),
                        }
                    }
                    (err, _) => Err(err),
                }
            }
        }
    }

    /// After a failed commit of program `id`: `None` when the failure is definite (nothing was
    /// written: the caller may remove the new blob); `Some(Ok)` when the error was transient but
    /// the program record exists (the commit happened; its answer); `Some(Err)` when that cannot
    /// be told (the blob must stay; cleanup collects it if it is an orphan).
    pub(crate) async fn committed_despite(
        &self,
        err: &Error,
        id: &ProgramId,
    ) -> Option<std::result::Result<StoredProgram, ()>> {
        if !err.is_transient() {
            return None;
        }
        match self.record(id).await {
            Ok(record) => Some(Ok(StoredProgram {
                id: record.id,
                signature: record.signature.clone(),
                version: record.version.clone(),
                project: record.project.clone(),
                created_at: format_time(&record.created_at),
                size: record.blob.size,
                sha256: record.blob.sha256.clone(),
            })),
            Err(Error::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(program_id = %id, error = %e, "cannot tell whether a failed commit happened; keeping its blob");
                Some(Err(()))
            }
        }
    }

    async fn idempotent_answer(
        &self,
        idem: &Idempotency,
        now: DateTime<Utc>,
    ) -> Result<IdempotentState> {
        let Some(item) = self
            .items
            .get(&keys::idempotency_pk(&idem.key), keys::IDEM_SK)
            .await?
        else {
            return Ok(IdempotentState::Unused);
        };
        let rec: IdempotencyRecord = from_item(&item)?;
        if rec.expires_at < now {
            return Ok(IdempotentState::Expired(
                item.get("expires_at").unwrap_or_default().to_owned(),
            ));
        }
        if rec.request_sha256 != idem.request_sha256 {
            return Err(Error::Precondition(
                "this Idempotency-Key was already used for a different request".into(),
            ));
        }
        serde_json::from_value(rec.response)
            .map(IdempotentState::Answered)
            .map_err(|e| Error::Internal(format!("idempotency record unreadable: {e}")))
    }

    /// Commits a new program whose blob is already stored: program record, version claim,
    /// signature head and tag entries in one conditional transaction, retried while the head
    /// moves under us. The version is the draft's or, when it has none, the next patch after the
    /// latest. `head` is the signature head when the caller has just read it (the first attempt
    /// builds on it; later ones read it again).
    pub(crate) async fn commit_new_program(
        &self,
        draft: Draft,
        now: DateTime<Utc>,
        idempotency: Option<&Idempotency>,
        head: Option<Option<SignatureHead>>,
    ) -> Result<StoredProgram> {
        let mut prefetched = head;
        let sig_pk = keys::signature_pk(&draft.project, &draft.signature);
        let mut attempt = 0u32;
        // Set when a transaction failed in a way that may hide a commit (a timeout).
        let mut maybe_committed = false;
        loop {
            attempt += 1;
            // (The retry decorator already retried a transient failure of this read.)
            let head: Option<SignatureHead> = match prefetched.take() {
                Some(head) => head,
                None => self
                    .items
                    .get(&sig_pk, keys::HEAD_SK)
                    .await?
                    .as_ref()
                    .map(from_item)
                    .transpose()?,
            };
            let version = match (&draft.version, &head) {
                (Some(v), _) => v.clone(),
                (None, Some(h)) => h.latest_version.next_patch(),
                (None, None) => Version::FIRST,
            };
            let mut map = draft.metadata.clone();
            map.insert(
                "signature".into(),
                Value::String(draft.signature.to_string()),
            );
            map.insert("version".into(), Value::String(version.to_string()));
            map.insert("project".into(), Value::String(draft.project.to_string()));
            if let Some(to) = &draft.rollback_to {
                if let Some(h) = &head {
                    map.insert(
                        "rollback_from".into(),
                        Value::String(h.latest_version.to_string()),
                    );
                }
                map.insert("rollback_to".into(), Value::String(to.to_string()));
                map.insert(
                    "rollback_timestamp".into(),
                    Value::String(format_time(&now)),
                );
            }
            let (id, created_at, blob) = (draft.id, draft.created_at, &draft.blob);
            let record = ProgramRecord {
                id,
                project: draft.project.clone(),
                signature: draft.signature.clone(),
                version: version.clone(),
                created_at,
                updated_at: now,
                metadata: map,
                primary_score: draft.primary_score,
                optimization_method: draft.optimization_method.clone(),
                tags: draft.tags.clone(),
                blob_key: draft.blob_key.clone(),
                blob: blob.clone(),
                status: ProgramStatus::Active,
                previous_version: head.as_ref().map(|h| h.latest_version.clone()),
                layout: draft.layout.clone(),
                restored_at: None,
            };
            let stored = StoredProgram {
                id,
                signature: record.signature.clone(),
                version: version.clone(),
                project: record.project.clone(),
                created_at: format_time(&created_at),
                size: blob.size,
                sha256: blob.sha256.clone(),
            };
            let new_head = match &head {
                None => SignatureHead {
                    project: record.project.clone(),
                    signature: record.signature.clone(),
                    latest_version: version.clone(),
                    latest_id: id,
                    latest_blob: Some(record.blob_pointer()),
                    versions: 1,
                    best_performance: record.primary_score,
                    updated_at: now,
                    aliases: Default::default(),
                    rev: 1,
                },
                Some(h) => {
                    let mut n = h.clone();
                    if version > h.latest_version {
                        n.latest_version = version.clone();
                        n.latest_id = id;
                        n.latest_blob = Some(record.blob_pointer());
                    }
                    n.versions += 1;
                    n.best_performance = max_score(h.best_performance, record.primary_score);
                    n.updated_at = now;
                    n.rev = h.rev + 1;
                    n
                }
            };
            let head_condition = match &head {
                None => Condition::NotExists,
                Some(h) => crate::model::record::rev_of(h),
            };
            let mut ops = vec![
                WriteOp::put(record.to_item(), Condition::NotExists),
                WriteOp::put(
                    record
                        .version_claim()
                        .to_item(&record.project, &record.signature),
                    Condition::NotExists,
                ),
                WriteOp::put(new_head.to_item(), head_condition),
            ];
            const IDEM_OP: usize = 3;
            if let Some(idem) = idempotency {
                let rec = IdempotencyRecord {
                    key: idem.key.clone(),
                    request_sha256: idem.request_sha256.clone(),
                    response: serde_json::to_value(&stored).expect("serializable"),
                    created_at: now,
                    expires_at: now
                        + chrono::Duration::from_std(self.config.idempotency_ttl)
                            .unwrap_or_default(),
                };
                // An expired record of the same key (seen by `store`) is replaced; a live one,
                // written meanwhile by a concurrent request, makes the write fail.
                let cond = match &idem.expired_record {
                    Some(expires_at) => {
                        Condition::AttrEquals("expires_at".into(), expires_at.clone())
                    }
                    None => Condition::NotExists,
                };
                ops.push(WriteOp::put(rec.to_item(), cond));
            }
            ops.extend(
                record
                    .tag_items()
                    .into_iter()
                    .map(|i| WriteOp::put(i, Condition::None)),
            );
            ops.push(crate::model::counters::store_counter_op(&record, &now));

            match self.items.transact(ops).await {
                Ok(()) => {
                    self.resolved.invalidate(&sig_pk);
                    let mut detail = serde_json::to_value(&stored)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    if let Some(from) = &draft.rollback_to {
                        detail["rollback_to"] = Value::String(from.to_string());
                    }
                    self.emit(vec![crate::events::Event::new(
                        crate::events::EventType::ProgramStored,
                        detail,
                    )])
                    .await;
                    return Ok(stored);
                }
                Err(Error::ConditionFailed { ops }) => {
                    // Our own earlier attempt may have committed: the record of our (fresh) id
                    // exists only then.
                    if maybe_committed && ops.contains(&0) {
                        if let Ok(rec) = self.record(&id).await {
                            self.resolved.invalidate(&sig_pk);
                            return Ok(StoredProgram {
                                version: rec.version,
                                ..stored
                            });
                        }
                    }
                    if idempotency.is_some() && ops.contains(&IDEM_OP) {
                        return Err(Error::ConditionFailed { ops });
                    }
                    if ops.contains(&1) && draft.version.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "signature {} already has version {version} in project {}",
                            draft.signature, draft.project
                        )));
                    }
                    if attempt >= self.config.max_write_attempts {
                        return Err(Error::Unavailable(format!(
                            "signature {} is changing too fast; store gave up after {attempt} attempts",
                            draft.signature
                        )));
                    }
                    backoff(attempt).await;
                }
                // A lost answer (a timeout): the transaction may have committed. Trying again is
                // safe — its conditions fail if it did, and `committed_despite` then tells. A
                // throttle was already retried by the decorator and is not retried here.
                Err(Error::Unavailable(_)) if attempt < self.config.max_write_attempts => {
                    maybe_committed = true;
                    backoff(attempt).await
                }
                Err(e) => return Err(e),
            }
        }
    }
}
