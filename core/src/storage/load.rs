//! Loading programs: records, blobs (verified), heads, version resolution and listings.

use serde_json::value::RawValue;

use crate::access::{no_program, Principal};
use crate::backend::{Index, Query, SkRange};
use crate::domain::{ProgramId, ProgramStatus, Project, Signature, VersionSelector};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::{from_item, BlobPointer, ProgramRecord, SignatureHead, VersionClaim};

/// What a store answers (`201` body).
use super::{no_version, no_versions, LoadedProgram, Storage, VersionListing};
use crate::paging::{decode_cursor, encode_cursor, page_limit};

impl Storage {
    /// Reads a program's record (no blob), if `who` may see its project: one item read.
    pub async fn get_record(&self, who: &Principal, id: &ProgramId) -> Result<ProgramRecord> {
        let record = self.record(id).await?;
        who.see_record(&record)?;
        Ok(record)
    }

    /// Reads a program's record, whoever asks (the callers decide the scope).
    pub(crate) async fn record(&self, id: &ProgramId) -> Result<ProgramRecord> {
        match self.items.get(&keys::program_pk(id), keys::PROG_SK).await? {
            Some(item) => from_item(&item),
            None => Err(no_program(id)),
        }
    }

    /// Reads a program, if `who` may see its project: one item read, one blob read, verified.
    pub async fn get_program(&self, who: &Principal, id: &ProgramId) -> Result<LoadedProgram> {
        let record = self.get_record(who, id).await?;
        self.loaded(record).await
    }

    /// Reads a program whoever asks (its signature's project was checked by the caller).
    pub(crate) async fn program(&self, id: &ProgramId) -> Result<LoadedProgram> {
        let record = self.record(id).await?;
        self.loaded(record).await
    }

    /// Reads a program whose id came from a head, a version claim or an alias target, with the
    /// blob pointer copied there: the record read and the blob read go out TOGETHER (one round
    /// trip instead of two). The blob is used only when the record just read is active and names
    /// the same blob and checksum; otherwise (an archived or restoring program, a pointer older
    /// than the record) the record's own blob is read, as without a pointer. So status and
    /// metadata are exactly as fresh as a load by id.
    pub(crate) async fn program_at(
        &self,
        id: &ProgramId,
        pointer: Option<&BlobPointer>,
    ) -> Result<LoadedProgram> {
        let Some(pointer) = pointer else {
            return self.program(id).await;
        };
        if self.programs.get(id, &pointer.sha256).is_some() {
            // In the program cache: only the record is read.
            return self.program(id).await;
        }
        let (record, blob) = tokio::join!(self.record(id), self.blobs.get(&pointer.key));
        let record = record?;
        let current = record.status == ProgramStatus::Active
            && record.blob_key == pointer.key
            && record.blob.sha256 == pointer.sha256;
        let loaded = match blob {
            Ok(stored) if current => self.decoded(record, &stored).await?,
            _ => self.load_blob(record).await?,
        };
        self.count_load(&loaded.record);
        Ok(loaded)
    }

    async fn loaded(&self, record: ProgramRecord) -> Result<LoadedProgram> {
        let loaded = self.load_blob(record).await?;
        self.count_load(&loaded.record);
        Ok(loaded)
    }

    pub(crate) async fn load_blob(&self, record: ProgramRecord) -> Result<LoadedProgram> {
        let record = match record.status {
            ProgramStatus::Active => record,
            // A restore under way: finished here when its copy is ready (maintenance.rs).
            ProgramStatus::Restoring => self.load_restoring(record).await?,
            ProgramStatus::Archived => {
                return Err(Error::Archived(format!(
                    "program {} is in cold storage; restore it first",
                    record.id
                )))
            }
        };
        if let Some(program) = self.programs.get(&record.id, &record.blob.sha256) {
            return Ok(LoadedProgram { record, program });
        }
        let stored = match self.blobs.get(&record.blob_key).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => {
                return Err(Error::Integrity(format!(
                    "the stored program {} is missing from the blob store",
                    record.id
                )))
            }
            Err(e) => return Err(e),
        };
        self.decoded(record, &stored).await
    }

    /// Decodes and verifies the stored bytes of an active program's blob, and caches the program.
    async fn decoded(&self, record: ProgramRecord, stored: &[u8]) -> Result<LoadedProgram> {
        let json = self.decode_blob(stored, &record.blob).await?;
        let text = String::from_utf8(json)
            .map_err(|_| Error::Integrity("stored program is not UTF-8".into()))?;
        let program = RawValue::from_string(text)
            .map_err(|e| Error::Integrity(format!("stored program is not valid JSON: {e}")))?;
        self.programs
            .insert(record.id, &record.blob.sha256, &program);
        Ok(LoadedProgram { record, program })
    }

    /// The head of a signature (latest version, counts, aliases), if `who` may see `project`.
    pub async fn get_head(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
    ) -> Result<SignatureHead> {
        who.see(project, || no_versions(project, signature))?;
        self.head(project, signature).await
    }

    /// The head of a signature, whoever asks.
    pub(crate) async fn head(
        &self,
        project: &Project,
        signature: &Signature,
    ) -> Result<SignatureHead> {
        match self
            .items
            .get(&keys::signature_pk(project, signature), keys::HEAD_SK)
            .await?
        {
            Some(item) => from_item(&item),
            None => Err(no_versions(project, signature)),
        }
    }

    /// Resolves `latest` or an exact version to a program id (one item read), if `who` may see
    /// `project`.
    pub async fn resolve_version(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<ProgramId> {
        who.see(project, || no_selected(project, signature, selector))?;
        self.resolve(project, signature, selector).await
    }

    async fn resolve(
        &self,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<ProgramId> {
        Ok(self.resolve_at(project, signature, selector).await?.0)
    }

    /// [`Self::resolve`], with the blob pointer of the item it read (none from the cache).
    async fn resolve_at(
        &self,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<(ProgramId, Option<BlobPointer>)> {
        match selector {
            VersionSelector::Latest => {
                let pk = keys::signature_pk(project, signature);
                if let Some(id) = self.resolved.get(&pk, "latest") {
                    return Ok((id, None));
                }
                let generation = self.resolved.generation();
                let head = self.head(project, signature).await?;
                self.resolved
                    .insert(&pk, "latest", head.latest_id, generation);
                Ok((head.latest_id, head.latest_blob))
            }
            VersionSelector::Exact(v) => {
                let item = self
                    .items
                    .get(
                        &keys::signature_pk(project, signature),
                        &keys::version_sk(v),
                    )
                    .await?
                    .ok_or_else(|| no_version(project, signature, v))?;
                let claim = from_item::<VersionClaim>(&item)?;
                Ok((claim.id, claim.blob))
            }
        }
    }

    /// Reads a version of a signature (`latest` or exact): at most one more item read than by id,
    /// in two round trips (the head or claim, then the record and the blob together). A cached
    /// resolution that has gone stale (the program was deleted elsewhere) is resolved again
    /// rather than answered with 404.
    pub async fn get_version(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<LoadedProgram> {
        who.see(project, || no_selected(project, signature, selector))?;
        let (id, pointer) = self.resolve_at(project, signature, selector).await?;
        match self.program_at(&id, pointer.as_ref()).await {
            Err(Error::NotFound(_)) if *selector == VersionSelector::Latest => {
                self.resolved
                    .invalidate(&keys::signature_pk(project, signature));
                let (id, pointer) = self.resolve_at(project, signature, selector).await?;
                self.program_at(&id, pointer.as_ref()).await
            }
            other => other,
        }
    }

    /// Lists a signature's versions in semantic-version order with the aliases pointing at each:
    /// ONE range read per page (the first page's read includes the head, which sorts before the
    /// version claims; later pages read the head separately).
    pub async fn list_versions(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<VersionListing> {
        who.see(project, || no_versions(project, signature))?;
        let pk = keys::signature_pk(project, signature);
        let limit = page_limit(limit)?;
        let start = cursor
            .map(|c| decode_cursor(&self.cursors, who, c, Index::Table, &pk))
            .transpose()?;
        let query = match &start {
            None => Query::new(Index::Table, pk.clone()).limit(limit + 1),
            Some(_) => Query::new(Index::Table, pk.clone())
                .sk(SkRange::BeginsWith(keys::VER_PREFIX.into()))
                .limit(limit)
                .start(start),
        };
        let page = self.items.query(&query).await?;
        let mut head: Option<SignatureHead> = None;
        let mut items = Vec::with_capacity(page.items.len());
        for item in &page.items {
            if item.sk == keys::HEAD_SK {
                head = Some(from_item(item)?);
            } else if item.sk.starts_with(keys::VER_PREFIX) {
                items.push(from_item::<VersionClaim>(item)?);
            }
        }
        if items.is_empty() && cursor.is_none() {
            return Err(no_versions(project, signature));
        }
        if cursor.is_some() {
            head = match self.head(project, signature).await {
                Ok(h) => Some(h),
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
        }
        Ok(VersionListing {
            items,
            aliases: crate::model::record::aliases_by_version(head.as_ref()),
            next_cursor: page
                .next
                .map(|k| encode_cursor(&self.cursors, who, Index::Table, &pk, &k)),
        })
    }
}

fn no_selected(project: &Project, signature: &Signature, selector: &VersionSelector) -> Error {
    match selector {
        VersionSelector::Latest => no_versions(project, signature),
        VersionSelector::Exact(v) => no_version(project, signature, v),
    }
}
