"""The error classes: one per error code of the dspy-storage API."""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """An error answer of the service (or a failure to reach it).

    ``status`` is the HTTP status (``None`` when no answer arrived), ``code`` the API's machine
    code (``not_found``, ``conflict``, ...), ``message`` the human text and ``field`` the offending
    input when the service named one.
    """

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        if code is not None:
            self.code = code
        self.field = field
        self.body = body

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"


class InvalidRequest(StorageError):
    code = "invalid_request"


class Unauthenticated(StorageError):
    code = "unauthenticated"


class Forbidden(StorageError):
    code = "forbidden"


class NotFound(StorageError):
    code = "not_found"


class Conflict(StorageError):
    code = "conflict"


class PolicyViolation(Conflict):
    """An alias's promotion policy refused the move: ``message`` names the requirement that
    failed with the measured value (``accuracy mean 0.874 over 23 records < min 0.9``). A
    subclass of ``Conflict`` (both are 409). An admin may move it anyway with
    ``set_alias(..., override_reason="...")``."""

    code = "policy_violation"


class Archived(StorageError):
    """The program's bytes are in cold storage: ``restore_from_archive`` first."""

    code = "archived"


class PayloadTooLarge(StorageError):
    code = "payload_too_large"


class IntegrityError(StorageError):
    """Bytes failed their SHA-256 (on the server, in transit or in the local cache)."""

    code = "integrity_error"


class Throttled(StorageError):
    code = "throttled"


class Unavailable(StorageError):
    """The service could not be reached, or failed (5xx) after retries."""

    code = "unavailable"


BY_CODE: dict[str, type[StorageError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        PolicyViolation,
        Archived,
        PayloadTooLarge,
        IntegrityError,
        Throttled,
        Unavailable,
    )
}

BY_STATUS: dict[int, type[StorageError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: IntegrityError,
    429: Throttled,
}


def from_answer(status: int, body: Any) -> StorageError:
    """The error of a non-2xx answer: by the API's code, else by the status."""
    code = message = field = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code, message, field = err.get("code"), err.get("message"), err.get("field")
    cls = BY_CODE.get(code or "") or BY_STATUS.get(status)
    if cls is None:
        cls = Unavailable if status >= 500 else StorageError
    return cls(
        str(message or f"HTTP {status}"),
        status=status,
        code=code or cls.code,
        field=field,
        body=body,
    )
