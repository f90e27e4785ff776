"""``ProgramStorage``: the dspy-storage API from Python, cached, verified, working when the
service is down. See the package README for the behaviour in full."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import httpx

from . import _dspy
from ._cache import ProgramCache, default_cache_dir, sha256_hex
from ._env import capture_environment_info
from ._errors import IntegrityError, InvalidRequest, NotFound, StorageError, Unavailable
from ._http import Http, SigV4Signer, _json_default, segment

log = logging.getLogger("dspy_storage")

DEFAULT_URL = "http://127.0.0.1:8080"
#: Most records per metrics request (the API's limit).
METRICS_CHUNK = 1000
_UNSET: Any = object()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: Any) -> str | None:
    """An RFC 3339 UTC string from a datetime (naive = UTC), a date string, or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )
    return str(value)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


@dataclass(frozen=True)
class StoredProgram:
    """A program as loaded: its record and its content, verified against ``sha256``.

    ``program`` is the DSPy module when the load was given ``into=``, else the saved JSON (the
    same value as ``state``). ``source`` is ``"server"`` or ``"cache"``; ``stale`` is true when the
    service could not be reached (or ``offline=True``) and this is the last target of a ``latest``
    or alias load that this machine resolved longer ago than ``alias_ttl``.
    """

    id: str
    signature: str
    version: str
    project: str
    metadata: dict[str, Any]
    program: Any
    state: Any
    sha256: str
    size: int
    created_at: str
    status: str
    stale: bool = False
    source: str = "server"
    raw: bytes = field(default=b"", repr=False, compare=False)


def _record_of(view: Mapping[str, Any]) -> dict[str, Any]:
    """The cached record: the facts of a ``/metadata`` answer."""
    keys = ("id", "signature", "version", "project", "sha256", "size", "created_at", "updated_at",
            "status", "metadata")
    return {k: view.get(k) for k in keys}


class ProgramStorage:
    """A client of one dspy-storage service (``url``) in one project.

    Thread-safe: one connection pool, shared by every thread using this object. Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        aws_iam: bool = False,
        project: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        alias_ttl: float = 60.0,
        timeout: float = 10.0,
        retries: int = 3,
        offline: bool | None = None,
        refresh: str = "background",
        region: str | None = None,
        transport: httpx.BaseTransport | None = None,
        disk_cache: bool = True,
    ) -> None:
        self.url = (url or os.environ.get("DSPY_STORAGE_URL") or DEFAULT_URL).rstrip("/")
        self.project = project or os.environ.get("DSPY_STORAGE_PROJECT") or None
        self.offline = _truthy(os.environ.get("DSPY_STORAGE_OFFLINE")) if offline is None else offline
        if refresh not in ("background", "inline"):
            raise ValueError('refresh must be "background" or "inline"')
        self.refresh = refresh
        self.alias_ttl = float(alias_ttl)
        token = token if token is not None else os.environ.get("DSPY_STORAGE_TOKEN")
        signer = SigV4Signer(region) if aws_iam else None
        self._http = Http(
            self.url, token=token, signer=signer, timeout=timeout, retries=retries,
            transport=transport,
        )
        directory = None
        if disk_cache:
            directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache = ProgramCache(directory, self.url, self.project or "default")
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._refreshing: set[tuple[str, str]] = set()
        self._unreachable: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # ----- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Waits for background refreshes, then closes the connection pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> "ProgramStorage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wait_for_refreshes(self, timeout: float = 10.0) -> None:
        """Blocks until the background refreshes started so far have finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._refreshing:
                    return
            time.sleep(0.01)

    # ----- plumbing -----------------------------------------------------------------------------

    def _params(self, **extra: Any) -> dict[str, Any]:
        p = {"project": self.project} if self.project else {}
        p.update({k: v for k, v in extra.items() if v is not None})
        return p

    def _online(self, what: str) -> None:
        if self.offline:
            raise Unavailable(f"offline=True: {what} needs the service")

    def _get(self, path: str, **params: Any) -> Any:
        self._online(f"GET {path}")
        return self._http.json("GET", path, params=params or None, idempotent=True)

    def _send(self, method: str, path: str, body: Any = None, *, idempotent: bool,
              params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        self._online(f"{method} {path}")
        return self._http.json(method, path, body=body, params=params, headers=headers,
                               idempotent=idempotent)

    def _pages(self, path: str, key: str, **params: Any) -> Iterator[Any]:
        cursor = None
        while True:
            page = self._get(path, **params, cursor=cursor)
            yield from page.get(key) or []
            cursor = page.get("next_cursor")
            if not cursor:
                return

    @staticmethod
    def _sig(signature: str) -> str:
        return segment(signature)

    # ----- store --------------------------------------------------------------------------------

    def store(
        self,
        program: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> StoredProgram:
        """Stores a program (a ``dspy.Module``, JSON text, or a saved JSON value) with
        ``metadata`` (as the API: ``signature`` required unless the program names one). Every store
        sends an ``Idempotency-Key`` (generated when not given), so a retried request never
        creates a second version. The answer's SHA-256 is checked against the bytes sent."""
        data = _dspy.program_bytes(program)
        meta = dict(metadata or {})
        if not meta.get("signature"):
            derived = _dspy.derive_signature(program)
            if derived is None:
                raise InvalidRequest(
                    "metadata.signature is required (the program names no signature)",
                    field="metadata.signature",
                )
            meta["signature"] = derived
        if self.project and "project" not in meta:
            meta["project"] = self.project
        body = b'{"program": ' + data + b', "metadata": ' + json.dumps(
            meta, default=_json_default
        ).encode() + b"}"
        key = idempotency_key or uuid.uuid4().hex
        answer = self._send_raw("POST", "/programs", body, {"idempotency-key": key})
        sha = sha256_hex(data)
        if answer.get("sha256") != sha:
            raise IntegrityError(
                f"the service stored bytes hashing to {answer.get('sha256')}, not {sha}"
            )
        project = meta.get("project") or self.project or "default"
        self.cache.forget_resolved(answer["signature"], "latest")
        state = json.loads(data)
        return StoredProgram(
            id=answer["id"],
            signature=answer["signature"],
            version=answer["version"],
            project=project,
            metadata={**meta, "version": answer["version"], "project": project},
            program=program if _dspy.is_module(program) else state,
            state=state,
            sha256=sha,
            size=int(answer.get("size") or len(data)),
            created_at=answer.get("created_at") or "",
            status="active",
            source="server",
            raw=data,
        )

    def _send_raw(self, method: str, path: str, content: bytes, headers: Mapping[str, str]) -> Any:
        self._online(f"{method} {path}")
        return self._http.json(method, path, content=content, headers=headers, idempotent=True)

    def store_version(
        self, program: Any, version: str, metadata: Mapping[str, Any] | None = None, **kw: Any
    ) -> StoredProgram:
        """Stores ``program`` as ``version`` (a semantic version) of its signature."""
        return self.store(program, {**(metadata or {}), "version": version}, **kw)

    # ----- loads ----------------------------------------------------------------------------------

    def _stored(self, record: Mapping[str, Any], data: bytes, *, source: str, stale: bool,
                into: Any) -> StoredProgram:
        if sha256_hex(data) != record["sha256"]:
            raise IntegrityError(f"program {record['id']}: bytes do not match sha256 {record['sha256']}")
        state = json.loads(data)
        program = _dspy.load_into(into, data, state) if into is not None else state
        return StoredProgram(
            id=record["id"],
            signature=record["signature"],
            version=record["version"],
            project=record.get("project") or "default",
            metadata=dict(record.get("metadata") or {}),
            program=program,
            state=state,
            sha256=record["sha256"],
            size=int(record.get("size") or len(data)),
            created_at=record.get("created_at") or "",
            status=record.get("status") or "active",
            stale=stale,
            source=source,
            raw=data,
        )

    def _fetch_bytes(self, path: str, params: Mapping[str, Any] | None,
                     known_sha: str | None = None) -> tuple[httpx.Response, bytes | None]:
        """GETs an exact-bytes route; the body (``None`` for a 304) verified against its hash."""
        self._online(f"GET {path}")
        headers = {"if-none-match": f'"{known_sha}"'} if known_sha else None
        answer = self._http.request("GET", path, params=params, headers=headers, idempotent=True)
        if answer.status_code == 304:
            return answer, None
        data = answer.content
        sha = answer.headers.get("x-dspy-sha256", "")
        if sha256_hex(data) != sha:
            raise IntegrityError(
                f"GET {path}: the body does not hash to X-Dspy-Sha256 {sha!r}: not returned"
            )
        return answer, data

    def _record(self, program_id: str, sha: str | None = None) -> dict[str, Any]:
        """The record of a program: from the cache, else ``GET /programs/{id}/metadata``."""
        rec = self.cache.record(program_id)
        if rec is not None and (sha is None or rec["sha256"] == sha):
            return rec
        rec = _record_of(self._get(f"/programs/{segment(program_id)}/metadata"))
        if sha is not None and rec["sha256"] != sha:
            raise IntegrityError(f"program {program_id}: record sha256 {rec['sha256']} != {sha}")
        return rec

    def _program(self, program_id: str) -> tuple[dict[str, Any], bytes, str]:
        """A program by id: memory, disk, then the service. Returns (record, bytes, source)."""
        rec = self.cache.record(program_id)
        if rec is not None:
            data = self.cache.blob(rec["sha256"])
            if data is not None:
                return rec, data, "cache"
        answer, data = self._fetch_bytes(f"/programs/{segment(program_id)}/program", None)
        assert data is not None
        rec = self._record(program_id, answer.headers.get("x-dspy-sha256"))
        self.cache.put_program(rec, data)
        return rec, data, "server"

    def load(self, program_id: str, *, into: Any = None) -> StoredProgram:
        """Loads a program by id (immutable: cached in memory and on disk, never fetched twice)."""
        rec, data, source = self._program(program_id)
        return self._stored(rec, data, source=source, stale=False, into=into)

    def load_version(self, signature: str, version: str = "latest", *, into: Any = None) -> StoredProgram:
        """Loads a version of a signature: an exact version (immutable, cached like ``load``) or
        ``"latest"`` (resolved through the service at most once per ``alias_ttl``)."""
        if version == "latest":
            return self._resolved(signature, "latest", into)
        program_id = self.cache.version(signature, version)
        if program_id is None:
            path = f"/signatures/{self._sig(signature)}/versions/{segment(version)}/program"
            answer, data = self._fetch_bytes(path, self._params())
            assert data is not None
            program_id = answer.headers["x-dspy-program-id"]
            rec = self._record(program_id, answer.headers.get("x-dspy-sha256"))
            self.cache.put_program(rec, data)
            self.cache.put_version(signature, version, program_id)
            return self._stored(rec, data, source="server", stale=False, into=into)
        return self.load(program_id, into=into)

    def load_alias(self, signature: str, alias: str, *, into: Any = None) -> StoredProgram:
        """Loads the program an alias points at (resolved at most once per ``alias_ttl``)."""
        return self._resolved(signature, f"alias:{alias}", into)

    def _resolve_path(self, signature: str, selector: str) -> str:
        if selector == "latest":
            return f"/signatures/{self._sig(signature)}/versions/latest/program"
        alias = selector.split(":", 1)[1]
        return f"/signatures/{self._sig(signature)}/aliases/{segment(alias)}/program"

    def _revalidate(self, signature: str, selector: str, known: Mapping[str, Any] | None) -> tuple[dict[str, Any], bytes]:
        """Asks the service where ``latest``/an alias points (``If-None-Match`` with the cached
        target's hash: a 304 sends no bytes) and caches the answer."""
        path = self._resolve_path(signature, selector)
        answer, data = self._fetch_bytes(path, self._params(), known["sha256"] if known else None)
        program_id = answer.headers["x-dspy-program-id"]
        sha = answer.headers.get("x-dspy-sha256") or (known or {}).get("sha256")
        if data is None:  # 304: the same bytes (perhaps under another id: a rollback)
            data = self.cache.blob(sha) if sha else None
            if data is None:
                answer, data = self._fetch_bytes(path, self._params())
                assert data is not None
                program_id = answer.headers["x-dspy-program-id"]
                sha = answer.headers["x-dspy-sha256"]
        rec = self._record(program_id, sha)
        self.cache.put_program(rec, data)
        self.cache.put_resolved(signature, selector, program_id, rec["sha256"], time.time())
        return rec, data

    def _resolved(self, signature: str, selector: str, into: Any) -> StoredProgram:
        known = self.cache.resolved(signature, selector)
        age = time.time() - known["resolved_at"] if known else None
        fresh = age is not None and age < self.alias_ttl
        if known and (fresh or self.offline):
            return self._from_resolution(known, stale=not fresh, into=into)
        if known and self.refresh == "background":
            # Stale-while-revalidate: the cached target at once, refreshed in the background;
            # stale while the last refresh of it found the service unreachable.
            self._refresh_later(signature, selector)
            with self._lock:
                down = (signature, selector) in self._unreachable
            return self._from_resolution(known, stale=down, into=into)
        if self.offline:
            raise Unavailable(
                f"offline=True and no cached target for {signature} {selector}; prefetch it first"
            )
        try:
            rec, data = self._revalidate(signature, selector, known)
        except NotFound:
            self.cache.forget_resolved(signature, selector)  # removed meanwhile: forget it
            raise
        except Unavailable as e:
            if not known:
                raise
            log.warning(
                "dspy-storage: %s unreachable (%s); answering %s %s with the target resolved "
                "%.0f s ago (stale)", self.url, e, signature, selector, age,
            )
            return self._from_resolution(known, stale=True, into=into)
        return self._stored(rec, data, source="server", stale=False, into=into)

    def _from_resolution(self, known: Mapping[str, Any], *, stale: bool, into: Any) -> StoredProgram:
        rec = self.cache.record(known["id"])
        data = self.cache.blob(known["sha256"]) if rec is not None else None
        if rec is None or data is None:
            # The resolution is cached but not the program (evicted): fetch it by id.
            rec, data, _ = self._program(known["id"])
        return self._stored(rec, data, source="cache", stale=stale, into=into)

    def _refresh_later(self, signature: str, selector: str) -> None:
        key = (signature, selector)
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="dspy-storage-refresh"
                )
            pool = self._pool

        def run() -> None:
            try:
                known = self.cache.resolved(signature, selector)
                self._revalidate(signature, selector, known)
                with self._lock:
                    self._unreachable.discard(key)
            except StorageError as e:
                if isinstance(e, Unavailable):
                    with self._lock:
                        self._unreachable.add(key)
                log.warning("dspy-storage: background refresh of %s %s failed (%s); answering "
                            "the cached target", signature, selector, e)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        pool.submit(run)

    def prefetch(self, signature: str, alias: str | None = None, *, version: str | None = None) -> StoredProgram:
        """Resolves and caches (memory and disk) an alias's target, an exact version, or
        ``latest`` (neither given), asking the service now whatever the TTL. A deploy runs it
        at build time and ships the cache directory, so a new container starts without the
        service (see the README's "Snapshots")."""
        if alias is not None and version is not None:
            raise ValueError("give an alias or a version, not both")
        if version is not None and version != "latest":
            return self.load_version(signature, version)
        selector = f"alias:{alias}" if alias is not None else "latest"
        rec, data = self._revalidate(signature, selector, None)
        return self._stored(rec, data, source="server", stale=False, into=None)

    def load_metadata(self, program_id: str) -> dict[str, Any]:
        """A program's record and metadata from the service (no program bytes read)."""
        view = self._get(f"/programs/{segment(program_id)}/metadata")
        rec = self.cache.record(program_id)
        if rec is not None:
            self.cache.put_record(_record_of(view))
        return view

    def list_signatures(self) -> list[dict[str, Any]]:
        """Every signature of the project with its counts and latest version."""
        return list(self._pages("/signatures", "signatures", **self._params()))

    def list_versions(self, signature: str) -> list[dict[str, Any]]:
        """A signature's versions in semantic-version order, each with its aliases."""
        return list(self._pages(f"/signatures/{self._sig(signature)}/versions", "versions",
                                **self._params()))

    # ----- versions, aliases, metadata -------------------------------------------------------------

    def set_alias(self, signature: str, alias: str, version: str, *,
                  expected_version: Any = _UNSET,
                  override_reason: str | None = None) -> dict[str, Any]:
        """Points ``alias`` at ``version``. With ``expected_version`` it is a compare-and-set (the
        alias must point there; ``None``: it must not exist), else ``Conflict``. When the alias's
        policy refuses the version, ``PolicyViolation`` (its message names the failed requirement
        and the measured value); an admin may pass ``override_reason`` to move it anyway (the
        reason is kept in the alias history). The answer's ``history`` is the entry the move
        wrote (absent when the alias already pointed there)."""
        body: dict[str, Any] = {"version": version}
        if expected_version is not _UNSET:
            body["expected_version"] = expected_version
        if override_reason is not None:
            body["override"] = {"reason": override_reason}
        answer = self._send("PUT", f"/signatures/{self._sig(signature)}/aliases/{segment(alias)}",
                            body, idempotent=expected_version is _UNSET, params=self._params())
        self.cache.forget_resolved(signature, f"alias:{alias}")
        return answer

    def set_alias_policy(
        self,
        signature: str,
        alias: str,
        *,
        protected: bool = False,
        require: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sets ``alias``'s promotion policy (admin): ``protected`` (moving or removing it needs
        the admin role) and ``require``, a gate on the version a move points it at —
        ``{"metric", "min"?, "min_records"?, "window"?, "environment"?,
        "not_worse_than_current"?, "tolerance"?}`` (docs/API.md). A bad policy is
        ``InvalidRequest`` naming the field (``require.min_records``)."""
        body: dict[str, Any] = {"protected": protected}
        if require is not None:
            body["require"] = dict(require)
        return self._send("PUT", self._alias_path(signature, alias) + "/policy", body,
                          idempotent=True, params=self._params())

    def get_alias_policy(self, signature: str, alias: str) -> dict[str, Any] | None:
        """``alias``'s policy, or ``None`` when it has none."""
        try:
            return self._get(self._alias_path(signature, alias) + "/policy", **self._params())
        except NotFound:
            return None

    def remove_alias_policy(self, signature: str, alias: str) -> None:
        """Removes ``alias``'s policy (admin); ``NotFound`` when it has none."""
        self._send("DELETE", self._alias_path(signature, alias) + "/policy", idempotent=True,
                   params=self._params())

    def alias_history(self, signature: str, alias: str, *,
                      limit: int | None = None) -> list[dict[str, Any]]:
        """``alias``'s history, newest first: every move, override, refusal, removal, restore
        and policy change (``{"at", "action", "from_version", "to_version", "by", "gate"?,
        "override_reason"?, ...}``); all of it, or the newest ``limit`` entries."""
        out: list[dict[str, Any]] = []
        page_size = min(limit, 1000) if limit else 1000
        for entry in self._pages(self._alias_path(signature, alias) + "/history", "entries",
                                 **self._params(limit=page_size)):
            out.append(entry)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _alias_path(self, signature: str, alias: str) -> str:
        return f"/signatures/{self._sig(signature)}/aliases/{segment(alias)}"

    def remove_alias(self, signature: str, alias: str) -> None:
        self._send("DELETE", f"/signatures/{self._sig(signature)}/aliases/{segment(alias)}",
                   idempotent=True, params=self._params())
        self.cache.forget_resolved(signature, f"alias:{alias}")

    def rollback_to_version(self, signature: str, target_version: str) -> dict[str, Any]:
        """A new version (the next patch) whose program is byte-identical to ``target_version``'s;
        it becomes ``latest``."""
        answer = self._send("POST", f"/signatures/{self._sig(signature)}/rollback",
                            {"to_version": target_version}, idempotent=False, params=self._params())
        self.cache.forget_resolved(signature, "latest")
        return answer

    def delete(self, program_id: str, *, force: bool = False) -> None:
        """Deletes a program (``force=True`` even when an alias points at it)."""
        rec = self.cache.record(program_id)
        self._send("DELETE", f"/programs/{segment(program_id)}", idempotent=True,
                   params={"force": "true"} if force else None)
        self.cache.forget_program(program_id)
        if rec is not None:
            self.cache.forget_resolved(rec["signature"], "latest")

    def update_metadata(
        self,
        program_id: str,
        *,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
        environment: str | None = None,
        description: str | None = None,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - the API's name
        expected_updated_at: str | None = None,
    ) -> dict[str, Any]:
        """Updates tags, environment, description and custom keys (``set``); with
        ``expected_updated_at`` a compare-and-set. Returns the new record."""
        body: dict[str, Any] = {}
        add, remove = list(add_tags), list(remove_tags)
        if add or remove:
            body["tags"] = {"add": add, "remove": remove}
        for k, v in (("environment", environment), ("description", description), ("set", set),
                     ("expected_updated_at", expected_updated_at)):
            if v is not None:
                body[k] = v
        # Repeating a patch changes nothing more, unless it is a compare-and-set (a retry of one
        # that succeeded would lose the comparison).
        view = self._send("PATCH", f"/programs/{segment(program_id)}/metadata", body,
                          idempotent=expected_updated_at is None)
        if self.cache.record(program_id) is not None:
            self.cache.put_record(_record_of(view))
        return view

    def diff(self, signature: str, from_version: str, to_version: str) -> dict[str, Any]:
        """Per predictor: instructions diff, demos added/removed, fields changed."""
        return self._get(f"/signatures/{self._sig(signature)}/diff",
                         **self._params(**{"from": from_version, "to": to_version}))

    def prompt(self, program_id: str) -> str:
        """Each predictor's instructions, fields and demos as Markdown."""
        self._online("GET prompt")
        return self._http.request("GET", f"/programs/{segment(program_id)}/prompt",
                                  idempotent=True).text

    def compatibility(self, program_id: str, other_id: str) -> dict[str, Any]:
        return self._get(f"/programs/{segment(program_id)}/compatibility", **{"with": other_id})

    # ----- performance ----------------------------------------------------------------------------

    def record_performance(
        self,
        program_id: str,
        metrics: Mapping[str, float],
        *,
        timestamp: Any = None,
        environment: Mapping[str, Any] | None = None,
        record_id: str | None = None,
    ) -> dict[str, Any]:
        """Records one set of metrics. The environment is captured (python and dspy versions,
        host, git commit) unless given. The record carries a generated ``record_id``, so the
        append is retried safely: the service stores a record id once."""
        record = {
            "metrics": dict(metrics),
            "timestamp": _time(timestamp) or _now_rfc3339(),
            "environment": dict(environment) if environment is not None else capture_environment_info(),
            "record_id": record_id or uuid.uuid4().hex,
        }
        return self._send("POST", f"/programs/{segment(program_id)}/metrics", record, idempotent=True)

    def record_many(self, program_id: str, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Records many (``{"metrics", "timestamp"?, "environment"?, "record_id"?}`` each) in
        requests of 1,000. Each record gets a record id before the first attempt, so retries
        never double one. Returns ``{"recorded", "already_recorded", "ids"}``."""
        prepared = []
        for r in records:
            r = dict(r)
            r.setdefault("record_id", uuid.uuid4().hex)
            if r.get("timestamp") is not None:
                r["timestamp"] = _time(r["timestamp"])
            prepared.append(r)
        total = {"recorded": 0, "already_recorded": 0, "ids": []}
        for i in range(0, len(prepared), METRICS_CHUNK):
            answer = self._send("POST", f"/programs/{segment(program_id)}/metrics",
                                {"records": prepared[i:i + METRICS_CHUNK]}, idempotent=True)
            total["recorded"] += answer.get("recorded", 0)
            total["already_recorded"] += answer.get("already_recorded", 0)
            total["ids"].extend(answer.get("ids", []))
        return total

    def get_performance_history(self, program_id: str, *, time_range: Any = None,
                                since: Any = None, until: Any = None) -> list[dict[str, Any]]:
        """Every metric record (all pages), oldest first; ``time_range`` (seconds or a
        ``timedelta``) back from now, or ``since``/``until``."""
        if time_range is not None and since is None:
            since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=_seconds(time_range))
        return list(self._pages(f"/programs/{segment(program_id)}/metrics", "records",
                                **{"from": _time(since), "to": _time(until), "limit": 1000}))

    def analyze_performance_trends(self, program_id: str, *, days: int = 90) -> dict[str, Any]:
        return self._get(f"/programs/{segment(program_id)}/trends", days=days)

    def signature_trends(self, signature: str, *, days: int = 90) -> dict[str, Any]:
        return self._get(f"/signatures/{self._sig(signature)}/trends", **self._params(days=days))

    def record_optimization_run(
        self,
        signature: str,
        method: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        trials: Sequence[Mapping[str, Any]] = (),
        best_score: float | None = None,
        trainset: Mapping[str, Any] | None = None,
        duration_s: float | None = None,
        started_at: Any = None,
        finished_at: Any = None,
        program_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Records an optimizer run (``POST /optimization-runs``); returns ``{"id", "run"}``."""
        now = _now_rfc3339()
        body: dict[str, Any] = {
            "signature": signature,
            "method": method,
            "parameters": dict(parameters or {}),
            "trials": [dict(t) for t in trials],
            "duration_s": duration_s if duration_s is not None else 0.0,
            "started_at": _time(started_at) or now,
            "finished_at": _time(finished_at) or now,
            "program_ids": list(program_ids),
        }
        if best_score is not None:
            body["best_score"] = best_score
        if trainset is not None:
            body["trainset"] = dict(trainset)
        if self.project:
            body["project"] = self.project
        return self._send("POST", "/optimization-runs", body, idempotent=False)

    def get_optimization_run(self, run_id: str) -> dict[str, Any]:
        return self._get(f"/optimization-runs/{segment(run_id)}")

    def list_optimization_runs(self, *, signature: str | None = None,
                               method: str | None = None) -> list[dict[str, Any]]:
        return list(self._pages("/optimization-runs", "runs",
                                **self._params(signature=signature, method=method)))

    # ----- search -----------------------------------------------------------------------------------

    def search(self, query: str | Mapping[str, Any], *, sort: Any = None,
               limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every match, lazily, page by page: ``query`` is a query-language string
        (``"version:1.* method:miprov2 created:last_week"``) or the structured form (a dict).
        ``limit`` caps the number of results."""
        left = limit
        cursor = None
        while left is None or left > 0:
            page_size = 100 if left is None else min(left, 100)
            if isinstance(query, str):
                s = sort if sort is None or isinstance(sort, str) else ",".join(sort)
                page = self._get("/search", **self._params(q=query, sort=s, limit=page_size,
                                                           cursor=cursor))
            else:
                body = dict(query)
                if sort is not None:
                    body["sort"] = sort
                if self.project and "project" not in body:
                    body["project"] = self.project
                body["limit"] = page_size
                body["cursor"] = cursor
                page = self._send("POST", "/search", body, idempotent=True)
            for r in page.get("results") or []:
                yield r
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def find_similar_programs(self, program_id: str, similarity_threshold: float = 0.8,
                              limit: int = 10) -> list[dict[str, Any]]:
        page = self._get(f"/programs/{segment(program_id)}/similar",
                         threshold=similarity_threshold, limit=limit)
        return page.get("results") or []

    def aggregate(self, spec: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """``POST /aggregate``: ``{"signature"?, "filters"?, "group_by"?, "metrics"}``."""
        body = {**(spec or {}), **kw}
        if self.project and "project" not in body:
            body["project"] = self.project
        return self._send("POST", "/aggregate", body, idempotent=True)

    def time_series(self, spec: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """``POST /time-series``: ``{"signature"?, "metric", "interval", "time_range"}``."""
        body = {**(spec or {}), **kw}
        if self.project and "project" not in body:
            body["project"] = self.project
        return self._send("POST", "/time-series", body, idempotent=True)

    # ----- operations -------------------------------------------------------------------------------

    def cleanup_old_versions(self, retention_policy: Mapping[str, Any] | None = None, *,
                             dry_run: bool = True) -> dict[str, Any]:
        """The retention policy (as the API: nothing changes unless ``dry_run=False``). A run the
        service cut short (``complete: false``) is continued until complete; the lists merged."""
        body: dict[str, Any] = {"dry_run": dry_run}
        if retention_policy:
            body["policy"] = dict(retention_policy)
        merged: dict[str, Any] | None = None
        while True:
            answer = self._send("POST", "/maintenance/cleanup", body, idempotent=dry_run)
            if merged is None:
                merged = answer
            else:
                for k in ("kept", "archived", "deleted", "skipped"):
                    merged.setdefault(k, []).extend(answer.get(k) or [])
                merged["complete"] = answer.get("complete")
                merged["next_cursor"] = answer.get("next_cursor")
            if answer.get("complete", True) or not answer.get("next_cursor"):
                break
            body["cursor"] = answer["next_cursor"]
        for k in ("archived", "deleted"):
            for entry in merged.get(k) or []:
                if not dry_run and entry.get("id"):
                    self.cache.forget_program(entry["id"])
        return merged

    def archive(self, program_id: str) -> dict[str, Any]:
        answer = self._send("POST", f"/programs/{segment(program_id)}/archive", idempotent=True)
        self.cache.forget_program(program_id)
        return answer

    def restore_from_archive(self, program_id: str) -> dict[str, Any]:
        answer = self._send("POST", f"/programs/{segment(program_id)}/restore", idempotent=True)
        self.cache.forget_program(program_id)
        return answer

    def create_backup(self, name: str | None = None) -> dict[str, Any]:
        return self._send("POST", "/backups", {"name": name} if name else {}, idempotent=False)

    def list_backups(self) -> list[dict[str, Any]]:
        return list(self._pages("/backups", "backups"))

    def restore_backup(self, name: str, *, verify_compatibility: bool = True) -> dict[str, Any]:
        return self._send("POST", f"/backups/{segment(name)}/restore",
                          {"verify_compatibility": verify_compatibility}, idempotent=False)

    def generate_report(self) -> dict[str, Any]:
        return self._get("/report")

    def health(self) -> dict[str, Any]:
        return self._get("/health")

