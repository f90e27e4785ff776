"""The program cache: memory and disk, every read verified against the record's SHA-256.

On disk, under ``<cache_dir>/<namespace>/`` (one namespace per service URL and project, so two
services or projects never share entries):

* ``blobs/<sha256>.json`` — a program's stored bytes exactly (content-addressed: a rollback's
  identical bytes are kept once);
* ``records/<id>.json`` — the program's record as the service answered it (id, signature, version,
  project, sha256, size, created_at, status, metadata);
* ``versions/<key>.json`` — an exact version's program id (immutable);
* ``resolved/<key>.json`` — the last target of ``latest`` or of an alias that this machine
  resolved, with when (``resolved_at``, seconds since the epoch): what a load answers, marked
  stale, while the service is down.

Files are written atomically (a temporary file renamed into place), so a crash never leaves a
half-written entry and several processes may share one cache directory. A blob whose bytes do not
hash to the record's ``sha256`` is never returned: reading it raises ``IntegrityError`` and the
file is removed (the next load fetches it again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from ._errors import IntegrityError

log = logging.getLogger("dspy_storage")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(*parts: str) -> str:
    return sha256_hex("\n".join(parts).encode())[:32]


def default_cache_dir() -> Path:
    """``$DSPY_STORAGE_CACHE_DIR``, else the user cache directory (``$XDG_CACHE_HOME`` or
    ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows)."""
    env = os.environ.get("DSPY_STORAGE_CACHE_DIR")
    if env:
        return Path(env)
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif os.uname().sysname == "Darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dspy-storage" / "programs"


class ProgramCache:
    """Thread-safe memory + disk cache of one namespace (service URL and project)."""

    def __init__(self, cache_dir: Path | None, url: str, project: str) -> None:
        self._lock = threading.RLock()
        self._blobs: dict[str, bytes] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, str] = {}
        self._resolved: dict[str, dict[str, Any]] = {}
        self.root: Path | None = None
        if cache_dir is not None:
            self.root = Path(cache_dir) / _key(url.rstrip("/"), project)
            self._write_json(
                self.root / "namespace.json", {"url": url.rstrip("/"), "project": project}
            )

    # ----- disk helpers ------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as e:
            log.warning("dspy-storage cache: cannot write %s (%s); kept in memory only", path, e)

    def _write_json(self, path: Path, value: Any) -> None:
        self._write(path, json.dumps(value, sort_keys=True).encode())

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None

    def _path(self, *parts: str) -> Path | None:
        return None if self.root is None else self.root.joinpath(*parts)

    # ----- blobs and records ---------------------------------------------------------------------

    def put_program(self, record: dict[str, Any], data: bytes) -> None:
        """Keeps a verified program: its bytes (by hash) and its record (by id)."""
        sha = record["sha256"]
        if sha256_hex(data) != sha:
            raise IntegrityError(f"refusing to cache bytes that do not hash to {sha}")
        with self._lock:
            self._blobs[sha] = data
            self._records[record["id"]] = record
        blob = self._path("blobs", f"{sha}.json")
        if blob is not None and not blob.exists():
            self._write(blob, data)
        self.put_record(record)
        # An exact version names one program for good: a later load of it needs no request.
        if record.get("signature") and record.get("version"):
            self.put_version(record["signature"], record["version"], record["id"])

    def put_record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records[record["id"]] = record
        path = self._path("records", f"{record['id']}.json")
        if path is not None:
            self._write_json(path, record)

    def record(self, program_id: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self._records.get(program_id)
        if rec is None:
            path = self._path("records", f"{program_id}.json")
            rec = self._read_json(path) if path is not None else None
            if isinstance(rec, dict) and rec.get("id") == program_id and "sha256" in rec:
                with self._lock:
                    self._records[program_id] = rec
            else:
                rec = None
        return rec

    def blob(self, sha: str) -> bytes | None:
        """The bytes with this SHA-256, verified; ``IntegrityError`` when the cached copy fails."""
        with self._lock:
            data = self._blobs.get(sha)
        from_disk = False
        if data is None:
            path = self._path("blobs", f"{sha}.json")
            if path is None:
                return None
            try:
                data = path.read_bytes()
            except OSError:
                return None
            from_disk = True
        if sha256_hex(data) != sha:
            with self._lock:
                self._blobs.pop(sha, None)
            path = self._path("blobs", f"{sha}.json")
            if path is not None:
                try:
                    path.unlink()
                except OSError:
                    pass
            where = "on disk" if from_disk else "in memory"
            raise IntegrityError(
                f"the cached program {sha[:12]}… {where} does not match its SHA-256; "
                "the entry was removed"
            )
        if from_disk:
            with self._lock:
                self._blobs[sha] = data
        return data

    def forget_program(self, program_id: str) -> None:
        """Drops a program's record and every version or resolution naming it."""
        with self._lock:
            self._records.pop(program_id, None)
            for k in [k for k, v in self._versions.items() if v == program_id]:
                del self._versions[k]
            for k in [k for k, v in self._resolved.items() if v.get("id") == program_id]:
                del self._resolved[k]
        for folder in ("versions", "resolved"):
            d = self._path(folder)
            if d is None or not d.is_dir():
                continue
            for f in d.glob("*.json"):
                v = self._read_json(f)
                if isinstance(v, dict) and v.get("id") == program_id:
                    f.unlink(missing_ok=True)
        path = self._path("records", f"{program_id}.json")
        if path is not None:
            path.unlink(missing_ok=True)

    # ----- exact versions (immutable) -------------------------------------------------------------

    def put_version(self, signature: str, version: str, program_id: str) -> None:
        k = _key(signature, version)
        with self._lock:
            self._versions[k] = program_id
        path = self._path("versions", f"{k}.json")
        if path is not None:
            self._write_json(path, {"signature": signature, "version": version, "id": program_id})

    def version(self, signature: str, version: str) -> str | None:
        k = _key(signature, version)
        with self._lock:
            hit = self._versions.get(k)
        if hit is None:
            path = self._path("versions", f"{k}.json")
            v = self._read_json(path) if path is not None else None
            if isinstance(v, dict) and v.get("signature") == signature and v.get("version") == version:
                hit = v.get("id")
                if hit:
                    with self._lock:
                        self._versions[k] = hit
        return hit

    # ----- latest / alias resolutions ---------------------------------------------------------------

    def put_resolved(self, signature: str, selector: str, program_id: str, sha: str, at: float) -> None:
        k = _key(signature, selector)
        entry = {
            "signature": signature,
            "selector": selector,
            "id": program_id,
            "sha256": sha,
            "resolved_at": at,
        }
        with self._lock:
            self._resolved[k] = entry
        path = self._path("resolved", f"{k}.json")
        if path is not None:
            self._write_json(path, entry)

    def resolved(self, signature: str, selector: str) -> dict[str, Any] | None:
        k = _key(signature, selector)
        with self._lock:
            hit = self._resolved.get(k)
        if hit is None:
            path = self._path("resolved", f"{k}.json")
            v = self._read_json(path) if path is not None else None
            if (
                isinstance(v, dict)
                and v.get("signature") == signature
                and v.get("selector") == selector
                and isinstance(v.get("resolved_at"), (int, float))
            ):
                hit = v
                with self._lock:
                    self._resolved[k] = v
        return dict(hit) if hit else None

    def forget_resolved(self, signature: str, selector: str | None = None) -> None:
        """Drops one resolution, or every resolution of the signature (``selector=None``)."""
        with self._lock:
            for k in [
                k
                for k, v in self._resolved.items()
                if v["signature"] == signature and selector in (None, v["selector"])
            ]:
                del self._resolved[k]
        d = self._path("resolved")
        if d is None or not d.is_dir():
            return
        if selector is not None:
            (d / f"{_key(signature, selector)}.json").unlink(missing_ok=True)
            return
        for f in d.glob("*.json"):
            v = self._read_json(f)
            if isinstance(v, dict) and v.get("signature") == signature:
                f.unlink(missing_ok=True)
