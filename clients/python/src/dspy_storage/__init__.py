"""dspy-storage from DSPy: save, load, alias, track and search optimized programs.

    from dspy_storage import ProgramStorage
    storage = ProgramStorage("http://127.0.0.1:8080")
    stored = storage.store(program, {"signature": "qa.Answer"})
    storage.set_alias("qa.Answer", "production", stored.version)
    program = storage.load_alias("qa.Answer", "production", into=QA()).program

Every program returned — from the service or from the cache — has been checked against its
record's SHA-256.
"""

__version__ = "0.1.0"

from ._env import capture_environment_info  # noqa: E402
from ._errors import (  # noqa: E402
    Archived,
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PolicyViolation,
    StorageError,
    Throttled,
    Unauthenticated,
    Unavailable,
)
from .client import ProgramStorage, StoredProgram  # noqa: E402

__all__ = [
    "Archived",
    "Conflict",
    "Forbidden",
    "IntegrityError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PolicyViolation",
    "ProgramStorage",
    "StorageError",
    "StoredProgram",
    "Throttled",
    "Unauthenticated",
    "Unavailable",
    "capture_environment_info",
]
