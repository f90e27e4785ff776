"""Verification: a tampered cache file and a blob corrupted on the server are ``IntegrityError``,
never the bytes; a body that does not hash to its header is refused."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from dspy_storage import IntegrityError, ProgramStorage

P1 = {"predict": {"demos": [], "signature": {"instructions": "verified"}}}


def test_tampered_cache_file_is_an_integrity_error(server, tmp_path: Path, sig: str) -> None:
    cache = tmp_path / "cache"
    with ProgramStorage(server.url, cache_dir=cache) as s:
        a = s.store(P1, {"signature": sig})
        s.load(a.id)
    blobs = list(cache.glob(f"*/blobs/{a.sha256}.json"))
    assert len(blobs) == 1
    blobs[0].write_bytes(b'{"predict": {"demos": [], "signature": {"instructions": "tampered"}}}')
    with ProgramStorage(server.url, cache_dir=cache) as s:
        with pytest.raises(IntegrityError) as e:
            s.load(a.id)
        assert "does not match" in str(e.value)
        assert not blobs[0].exists()  # removed: the next load fetches it again
        again = s.load(a.id)
        assert again.state == P1 and again.source == "server"


def test_tampered_memory_entry_is_an_integrity_error(server, tmp_path: Path, sig: str) -> None:
    with ProgramStorage(server.url, cache_dir=tmp_path / "c", disk_cache=False) as s:
        a = s.store(P1, {"signature": sig})
        s.load(a.id)
        s.cache._blobs[a.sha256] = b'{"x": 1}'
        with pytest.raises(IntegrityError):
            s.load(a.id)


def _corrupt_blob(server, program_id: str, record: dict) -> None:
    if server.backend == "embedded":
        found = [p for p in server.data_dir.rglob(f"{program_id}*") if p.is_file()]
        assert len(found) == 1, found
        found[0].write_bytes(b"\x28\xb5\x2f\xfd garbage, not the stored program")
        return
    import botocore.session

    s3 = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=server.name).get("Contents", [])
            if program_id in o["Key"]]
    assert len(keys) == 1, keys
    s3.put_object(Bucket=server.name, Key=keys[0], Body=b"garbage, not the stored program")


def test_blob_corrupted_on_the_server_is_an_integrity_error(make_server, tmp_path: Path, sig: str) -> None:
    server = make_server()
    with ProgramStorage(server.url, cache_dir=tmp_path / "writer") as s:
        a = s.store(P1, {"signature": sig})
        s.set_alias(sig, "production", a.version)
        record = s.load_metadata(a.id)
    _corrupt_blob(server, a.id, record)
    with ProgramStorage(server.url, cache_dir=tmp_path / "reader") as s:
        for load in (lambda: s.load(a.id), lambda: s.load_version(sig),
                     lambda: s.load_alias(sig, "production"), lambda: s.load_version(sig, a.version)):
            with pytest.raises(IntegrityError) as e:
                load()
            assert e.value.status == 422 and e.value.code == "integrity_error"


def test_body_not_matching_its_hash_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"a": 2}', headers={
            "x-dspy-sha256": "0" * 64, "x-dspy-program-id": "p", "etag": '"' + "0" * 64 + '"'})

    with ProgramStorage("http://stub", cache_dir=tmp_path, transport=httpx.MockTransport(handler)) as s:
        with pytest.raises(IntegrityError):
            s.load("0190a5c2-7b1e-7c3d-8e4f-123456789abc")
        with pytest.raises(IntegrityError):
            s.load_alias("S", "production")
    assert not list(tmp_path.glob("*/blobs/*"))
