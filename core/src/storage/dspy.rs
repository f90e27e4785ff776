//! Reading DSPy programs through the storage service: diff two versions of a signature, render a
//! program's prompts, check whether two programs can replace each other. The pure work is in
//! [`crate::dspy`].

use serde::Serialize;
use serde_json::Value;

use crate::access::Principal;
use crate::domain::{ProgramId, Project, Signature, Version, VersionSelector};
use crate::dspy::{self, Compatibility, ProgramDiff};
use crate::error::{Error, Result};
use crate::storage::{LoadedProgram, Storage};

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffSide {
    pub id: ProgramId,
    pub version: Version,
}

/// The diff of two versions of a signature (`GET /signatures/{signature}/diff`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionsDiff {
    pub signature: Signature,
    pub project: Project,
    pub from: DiffSide,
    pub to: DiffSide,
    #[serde(flatten)]
    pub diff: ProgramDiff,
}

fn program_value(p: &LoadedProgram) -> Result<Value> {
    serde_json::from_str(p.program.get()).map_err(|e| {
        Error::Integrity(format!(
            "the stored program {} is not valid JSON: {e}",
            p.record.id
        ))
    })
}

impl Storage {
    /// Compares two versions (`latest` or exact) of a signature: per predictor for DSPy
    /// programs, as JSON otherwise. Reads both programs.
    pub async fn diff_versions(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        from: &VersionSelector,
        to: &VersionSelector,
    ) -> Result<VersionsDiff> {
        let (a, b) = tokio::try_join!(
            self.get_version(who, project, signature, from),
            self.get_version(who, project, signature, to)
        )?;
        let (va, vb) = (program_value(&a)?, program_value(&b)?);
        let diff = dspy::diff_labeled(
            &va,
            &vb,
            &a.record.version.to_string(),
            &b.record.version.to_string(),
        );
        Ok(VersionsDiff {
            signature: signature.clone(),
            project: project.clone(),
            from: DiffSide {
                id: a.record.id,
                version: a.record.version.clone(),
            },
            to: DiffSide {
                id: b.record.id,
                version: b.record.version.clone(),
            },
            diff,
        })
    }

    /// A program's prompts as Markdown, titled with its signature and version.
    pub async fn prompt(&self, who: &Principal, id: &ProgramId) -> Result<String> {
        let loaded = self.get_program(who, id).await?;
        let value = program_value(&loaded)?;
        let title = format!(
            "{} {} (project {})",
            loaded.record.signature, loaded.record.version, loaded.record.project
        );
        Ok(dspy::render_prompt_titled(&value, &title))
    }

    /// Whether program `id` (A) and program `other` (B) can replace each other, from the
    /// predictor layouts recorded when they were stored: reads the two records, no blobs. See
    /// [`dspy::compatibility`] for what is compared, and for programs without a layout.
    pub async fn compatibility(
        &self,
        who: &Principal,
        id: &ProgramId,
        other: &ProgramId,
    ) -> Result<Compatibility> {
        let (a, b) = tokio::try_join!(self.get_record(who, id), self.get_record(who, other))?;
        Ok(dspy::compatibility(a.layout.as_ref(), b.layout.as_ref()))
    }
}
