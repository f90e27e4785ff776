//! The one error type of the storage core. Semantic variants only: the HTTP layer maps each to a
//! status and a machine code in one place.

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller sent something invalid (bad semver, bad signature, wrong type, ...).
    #[error("{message}")]
    InvalidInput {
        field: Option<String>,
        message: String,
    },
    /// Unknown id, signature, version or alias.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (a whole-store operation by a caller restricted to some
    /// projects). A project outside the caller's scope is [`Error::NotFound`], never this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing to create already exists (e.g. a version that is taken).
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set lost, or a precondition on the current state failed.
    #[error("{0}")]
    Precondition(String),
    /// A conditional write of a backend failed; `ops` are the indexes of the operations of the
    /// transaction whose condition failed (empty when the backend cannot tell).
    #[error("condition failed on operation(s) {ops:?}")]
    ConditionFailed { ops: Vec<usize> },
    /// An alias's promotion policy refused a move: the message names the requirement that
    /// failed with the measured value.
    #[error("{0}")]
    PolicyViolation(String),
    /// The program's blob is in cold storage.
    #[error("{0}")]
    Archived(String),
    /// The request body is over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Stored bytes fail their checksum or cannot be decrypted.
    #[error("{0}")]
    Integrity(String),
    /// The backing store throttled us and retries did not help.
    #[error("{0}")]
    Throttled(String),
    /// The backing store failed or could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A bug: a state the code does not expect.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: None,
            message: message.into(),
        }
    }

    /// Errors worth retrying after a pause: throttling and transient unavailability.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Throttled(_) | Error::Unavailable(_))
    }
}
