"""When the service is down: alias/latest loads answer the last target this machine resolved,
from disk, with ``stale=True`` and a warning; pinned loads come from the disk cache; ``offline``
never calls the service; a prefetched cache lets a new container start without it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import Counting, run_module
from dspy_storage import ProgramStorage, Unavailable

P1 = {"predict": {"demos": [], "signature": {"instructions": "production program"}}}


def test_killed_server_answers_stale_from_disk(make_server, tmp_path: Path, sig: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    cache = tmp_path / "cache"
    with ProgramStorage(server.url, cache_dir=cache, alias_ttl=0.0) as s:
        a = s.store(P1, {"signature": sig, "version": "1.0.0"})
        s.set_alias(sig, "production", "1.0.0")
        assert s.load_alias(sig, "production").source == "server"
        assert s.load_version(sig).id == a.id
        unseen = s.store({"other": 1}, {"signature": sig + "x"})
    server.stop()

    # A new process (empty memory) on the same machine: from disk.
    with ProgramStorage(server.url, cache_dir=cache, alias_ttl=0.0, retries=1, refresh="inline") as s:
        with caplog.at_level(logging.WARNING, logger="dspy_storage"):
            p = s.load_alias(sig, "production")
        assert (p.id, p.state, p.stale, p.source) == (a.id, P1, True, "cache")
        assert any("unreachable" in r.getMessage() and "stale" in r.getMessage() for r in caplog.records)
        latest = s.load_version(sig)
        assert latest.stale and latest.id == a.id
        pinned = s.load(a.id)
        assert pinned.source == "cache" and not pinned.stale
        assert s.load_version(sig, "1.0.0").id == a.id
        # Nothing cached for it: Unavailable, never a guess.
        with pytest.raises(Unavailable):
            s.load(unseen.id)
        with pytest.raises(Unavailable):
            s.load_alias(sig, "staging")
        with pytest.raises(Unavailable):
            s.health()
    # With background refresh: the cached target at once; once a refresh has found the service
    # unreachable, the answers say stale.
    with ProgramStorage(server.url, cache_dir=cache, alias_ttl=0.0, retries=0) as s:
        with caplog.at_level(logging.WARNING, logger="dspy_storage"):
            p = s.load_alias(sig, "production")
            assert p.id == a.id and p.source == "cache"
            s.wait_for_refreshes()
            assert s.load_alias(sig, "production").stale
        assert any("background refresh" in r.getMessage() for r in caplog.records)


def test_offline_never_calls_the_service(server, tmp_path: Path, sig: str) -> None:
    cache = tmp_path / "cache"
    with ProgramStorage(server.url, cache_dir=cache) as s:
        a = s.store(P1, {"signature": sig})
        s.set_alias(sig, "production", a.version)
        s.prefetch(sig, "production")
        s.prefetch(sig)  # latest
    counting = Counting()
    with ProgramStorage(server.url, cache_dir=cache, offline=True, transport=counting, alias_ttl=0) as s:
        p = s.load_alias(sig, "production")
        assert p.id == a.id and p.source == "cache" and p.stale  # older than the TTL of 0
        assert s.load_version(sig).id == a.id
        assert s.load(a.id).state == P1
        with pytest.raises(Unavailable):
            s.load_alias(sig, "staging")
        with pytest.raises(Unavailable):
            s.store(P1, {"signature": sig})
    assert counting.requests == []


def test_prefetched_cache_starts_a_new_container_without_the_service(make_server, tmp_path: Path, sig: str) -> None:
    server = make_server()
    build_cache = tmp_path / "image-cache"
    with ProgramStorage(server.url, cache_dir=tmp_path / "dev") as s:
        a = s.store(P1, {"signature": sig, "version": "2.0.0"})
        s.set_alias(sig, "production", "2.0.0")
    # At build time: python -m dspy_storage prefetch.
    out = run_module("prefetch", sig, "--alias", "production", "--version", "2.0.0",
                     "--url", server.url, "--cache-dir", str(build_cache))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [x["id"] for x in lines] == [a.id, a.id]
    server.stop()
    # At run time, the service down: the shipped cache answers.
    out = run_module("load", sig, "--alias", "production", "--url", server.url,
                     "--cache-dir", str(build_cache), "--alias-ttl", "0", "--retries", "0")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["id"] == a.id and got["stale"] is True and got["source"] == "cache"
    assert "unreachable" in out.stderr
    with ProgramStorage(server.url, cache_dir=build_cache, retries=0) as s:
        assert s.load_version(sig, "2.0.0").state == P1
