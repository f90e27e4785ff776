//! Who is asking, as the core sees it: a [`Principal`] — an id for logs and cursors (never a
//! secret), the projects it may see ([`Scope`]) and its [`Role`].
//!
//! Every operation of [`crate::storage::Storage`] that reaches a project takes the principal and
//! decides there, where the project is read, whether the caller may see it: a program or a
//! signature in a project outside the scope is answered exactly like a missing one
//! ([`crate::Error::NotFound`], with the same message); whole-store operations (cleanup, backups)
//! need the scope [`Scope::All`] ([`crate::Error::Forbidden`]); listings across projects (the
//! report) keep only the scope's projects. Nothing before the core re-derives which projects a
//! request reaches.
//!
//! The HTTP layer authenticates callers and turns them into principals (and checks the role a
//! route needs); the CLI works as the unrestricted [`OPERATOR`].

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::domain::{ProgramId, Project};
use crate::error::{Error, Result};
use crate::model::record::ProgramRecord;

/// What a caller may do. Ordered: each role can do everything the previous one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read and search.
    Reader,
    /// + store, metrics, aliases, rollback, delete, metadata updates.
    Writer,
    /// + cleanup, archive, restore, backups.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// The projects a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*`: every project, and whole-store operations.
    All,
    /// Only these projects.
    Only(BTreeSet<String>),
}

impl Scope {
    /// From a list of names; `*` anywhere means all. Each name must be a valid project.
    pub fn from_names<I, S>(names: I) -> std::result::Result<Scope, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref().trim();
            if n.is_empty() {
                continue;
            }
            if n == "*" {
                return Ok(Scope::All);
            }
            Project::parse(n).map_err(|e| format!("project {n:?}: {e}"))?;
            set.insert(n.to_owned());
        }
        Ok(Scope::Only(set))
    }

    pub fn allows(&self, project: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(set) => set.contains(project),
        }
    }
}

/// Who is calling: an id for the logs and for binding cursors (a token's name, a JWT subject,
/// an IAM ARN; never a secret), the projects it may see and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub scope: Scope,
    pub role: Role,
}

/// The CLI: an operator on the machine, with every project and the admin role (its alias moves
/// are recorded in the alias history as `cli`).
pub static OPERATOR: LazyLock<Principal> =
    LazyLock::new(|| Principal::new("cli", Scope::All, Role::Admin));

/// Every caller when access control is off (`dspy-storage serve` without `--auth-file`).
pub static ANONYMOUS: LazyLock<Principal> =
    LazyLock::new(|| Principal::new("anonymous", Scope::All, Role::Admin));

/// The scheduled jobs (the daily cleanup and backup events): every project, admin.
pub static SCHEDULER: LazyLock<Principal> =
    LazyLock::new(|| Principal::new("scheduler", Scope::All, Role::Admin));

impl Principal {
    pub fn new(id: impl Into<String>, scope: Scope, role: Role) -> Principal {
        Principal {
            id: id.into(),
            scope,
            role,
        }
    }

    pub fn may_see(&self, project: &str) -> bool {
        self.scope.allows(project)
    }

    /// `None`: every project; `Some(set)`: only these.
    pub fn project_filter(&self) -> Option<&BTreeSet<String>> {
        match &self.scope {
            Scope::All => None,
            Scope::Only(set) => Some(set),
        }
    }

    pub fn is_restricted(&self) -> bool {
        self.scope != Scope::All
    }

    /// `Ok` when the caller may see `project`, else `missing()` — the error the operation gives
    /// for a missing thing, so a project outside the scope is indistinguishable from an empty one.
    pub(crate) fn see(&self, project: &Project, missing: impl FnOnce() -> Error) -> Result<()> {
        if self.may_see(project.as_str()) {
            Ok(())
        } else {
            tracing::info!(principal = %self.id, "project outside the caller's scope");
            Err(missing())
        }
    }

    /// [`Self::see`] for operations on a project itself (a listing, a search, a store).
    pub(crate) fn see_project(&self, project: &Project) -> Result<()> {
        self.see(project, || no_project(project))
    }

    /// [`Self::see`] for a program read by id: outside the scope it is "no program with id".
    pub(crate) fn see_record(&self, record: &ProgramRecord) -> Result<()> {
        self.see(&record.project, || no_program(&record.id))
    }

    /// Operations that need the admin role inside a project (alias policies, protected aliases,
    /// overrides): [`crate::Error::Forbidden`] naming what needed it.
    pub(crate) fn admin(&self, what: &str) -> Result<()> {
        if self.role >= Role::Admin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{what} needs the admin role; the caller is a {}",
                self.role.as_str()
            )))
        }
    }

    /// Whole-store operations (cleanup, backups): only a caller on every project.
    pub(crate) fn whole_store(&self, what: &str) -> Result<()> {
        match self.scope {
            Scope::All => Ok(()),
            Scope::Only(_) => Err(Error::Forbidden(format!(
                "{what} works on the whole store: it needs projects \"*\""
            ))),
        }
    }
}

/// The answer for a program id that is unknown — or outside the caller's projects.
pub fn no_program(id: &ProgramId) -> Error {
    Error::NotFound(format!("no program with id {id}"))
}

/// The answer for a project outside the caller's projects (the same whether or not it exists).
pub fn no_project(project: &Project) -> Error {
    Error::NotFound(format!("project {project} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_roles() {
        let ab = Scope::from_names(["a", "b"]).unwrap();
        assert!(ab.allows("a") && !ab.allows("c"));
        assert_eq!(Scope::from_names(["a", "*"]).unwrap(), Scope::All);
        assert!(Scope::from_names(["../x"]).is_err());
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
        let p = Principal::new("t", ab, Role::Reader);
        let beta = Project::parse("c").unwrap();
        assert!(matches!(p.see_project(&beta), Err(Error::NotFound(_))));
        assert!(matches!(p.whole_store("x"), Err(Error::Forbidden(_))));
        assert!(OPERATOR.whole_store("x").is_ok());
    }
}
