"""Each error class from a real server answer (Throttled from a stub transport: no real server
throttles on demand), and the retry rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from dspy_storage import (Archived, Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge,
                          ProgramStorage, StorageError, Throttled, Unauthenticated, Unavailable)

P = {"predict": {"demos": [], "signature": {"instructions": "x"}}}


def test_error_classes_from_real_answers(storage: ProgramStorage, sig: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        storage.store(P, {"signature": "bad signature!"})
    assert (e.value.status, e.value.code) == (400, "invalid_request") and e.value.field
    with pytest.raises(NotFound) as e:
        storage.load("0190a5c2-7b1e-7c3d-8e4f-123456789abc")
    assert e.value.status == 404
    with pytest.raises(NotFound):
        storage.load_alias(sig, "production")
    a = storage.store(P, {"signature": sig, "version": "1.0.0"})
    with pytest.raises(InvalidRequest) as e:
        storage.record_performance(a.id, {"a": 1}, record_id="no spaces")
    assert e.value.field == "record_id"
    with pytest.raises(Conflict) as e:
        storage.store(P, {"signature": sig, "version": "1.0.0"})
    assert e.value.status == 409 and e.value.code == "conflict"
    storage.set_alias(sig, "production", "1.0.0")
    with pytest.raises(Conflict):
        storage.set_alias(sig, "production", "1.0.0", expected_version=None)  # must not exist
    with pytest.raises(Conflict):
        storage.delete(a.id)  # an alias points at it
    b = storage.store(P, {"signature": sig, "version": "1.1.0"})
    storage.archive(a.id)
    with pytest.raises(Archived) as e:
        storage.load(a.id)
    assert (e.value.status, e.value.code) == (409, "archived")
    storage.restore_from_archive(a.id)
    assert storage.load(a.id).state == P
    assert b.version == "1.1.0"
    with pytest.raises(PayloadTooLarge) as e:
        storage.store({"big": "x" * (5 * 1024 * 1024 + 10)}, {"signature": sig})
    assert e.value.status == 413


def test_unauthenticated_and_forbidden(make_server, tmp_path: Path, sig: str) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(
        "[[token]]\nname = \"reader\"\n"
        f"sha256 = \"{hashlib.sha256(b'read-token').hexdigest()}\"\nprojects = [\"*\"]\nrole = \"reader\"\n"
        "[[token]]\nname = \"writer\"\n"
        f"sha256 = \"{hashlib.sha256(b'write-token').hexdigest()}\"\nprojects = [\"*\"]\nrole = \"writer\"\n"
    )
    server = make_server("--auth-file", str(auth))
    with ProgramStorage(server.url, cache_dir=tmp_path / "c", token="wrong") as s:
        with pytest.raises(Unauthenticated) as e:
            s.list_signatures()
        assert e.value.status == 401
    with ProgramStorage(server.url, cache_dir=tmp_path / "c", token="write-token") as s:
        a = s.store(P, {"signature": sig})
    with ProgramStorage(server.url, cache_dir=tmp_path / "c2", token="read-token") as s:
        assert s.load(a.id).state == P
        with pytest.raises(Forbidden) as e:
            s.store(P, {"signature": sig})
        assert e.value.status == 403


def test_unavailable_from_a_stopped_server(make_server, tmp_path: Path) -> None:
    server = make_server()
    server.stop()
    with ProgramStorage(server.url, cache_dir=tmp_path, retries=1) as s:
        with pytest.raises(Unavailable) as e:
            s.health()
        assert e.value.status is None and "cannot reach" in str(e.value)
    with ProgramStorage(f"http://127.0.0.1:{free_port()}", cache_dir=tmp_path, retries=0) as s:
        with pytest.raises(Unavailable):
            s.list_signatures()


class Stub(httpx.BaseTransport):
    """Answers from a list of (status, body); records every request."""

    def __init__(self, answers: list[tuple[int, dict]]) -> None:
        self.answers = answers
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        status, body = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return httpx.Response(status, json=body)


THROTTLED = (429, {"error": {"code": "throttled", "message": "slow down"}})
DOWN = (503, {"error": {"code": "unavailable", "message": "backend failed"}})


def test_throttled_is_retried_then_raised(tmp_path: Path) -> None:
    stub = Stub([THROTTLED])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub, retries=2) as s:
        s._http.backoff = 0.001
        with pytest.raises(Throttled) as e:
            s.health()
    assert e.value.status == 429 and e.value.message == "slow down"
    assert len(stub.seen) == 3  # the first attempt + 2 retries

    stub = Stub([THROTTLED, DOWN, (200, {"status": "ok"})])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub, retries=3) as s:
        s._http.backoff = 0.001
        assert s.health() == {"status": "ok"}
    assert len(stub.seen) == 3


def test_stores_retry_with_one_idempotency_key_and_non_idempotent_writes_do_not(tmp_path: Path) -> None:
    ok = (201, {"id": "i", "signature": "S", "version": "1.0.0", "created_at": "t", "size": 2,
                "sha256": hashlib.sha256(b'{"a": 1}').hexdigest()})
    stub = Stub([DOWN, THROTTLED, ok])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub) as s:
        s._http.backoff = 0.001
        assert s.store({"a": 1}, {"signature": "S"}).version == "1.0.0"
    keys = {r.headers["idempotency-key"] for r in stub.seen}
    assert len(stub.seen) == 3 and len(keys) == 1
    # A rollback creates a version: a 503 is not retried (it might have happened).
    stub = Stub([DOWN, (201, {})])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub) as s:
        with pytest.raises(Unavailable):
            s.rollback_to_version("S", "1.0.0")
    assert len(stub.seen) == 1
    # Metric appends carry record ids: retried, with the same ids.
    stub = Stub([DOWN, (201, {"recorded": 1, "already_recorded": 0, "ids": ["x"]})])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub) as s:
        s._http.backoff = 0.001
        s.record_performance("p", {"accuracy": 1.0})
    assert len(stub.seen) == 2 and stub.seen[0].content == stub.seen[1].content


def test_unknown_error_shapes_map_by_status(tmp_path: Path) -> None:
    stub = Stub([(418, {"nope": 1})])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub) as s:
        with pytest.raises(StorageError) as e:
            s.health()
    assert e.value.status == 418 and type(e.value) is StorageError
    stub = Stub([(502, {"message": "Internal Server Error"})])
    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=stub, retries=0) as s:
        with pytest.raises(Unavailable):
            s.health()
