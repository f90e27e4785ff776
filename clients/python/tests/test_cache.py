"""Caching: pinned loads kept in memory and on disk and never fetched again; ``latest``/aliases
resolved at most once per ``alias_ttl`` (stale-while-revalidate in the background, or inline);
the client's own writes seen at once; one namespace per (url, project); thread safety."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from conftest import Counting, Server
from dspy_storage import NotFound, ProgramStorage, Unavailable

P1 = {"predict": {"demos": [], "signature": {"instructions": "one"}}}
P2 = {"predict": {"demos": [], "signature": {"instructions": "two"}}}
P3 = {"predict": {"demos": [], "signature": {"instructions": "three"}}}


def client(server: Server, cache: Path, counting: Counting | None = None, **kw) -> ProgramStorage:
    return ProgramStorage(server.url, cache_dir=cache, transport=counting, **kw)


def test_pinned_loads_are_fetched_once(server: Server, tmp_path: Path, sig: str, counting: Counting) -> None:
    with client(server, tmp_path / "c") as writer:
        a = writer.store(P1, {"signature": sig, "version": "1.0.0"})
    with client(server, tmp_path / "c", counting) as s:
        first = s.load(a.id)
        assert first.source == "server" and first.state == P1
        # The bytes route, then the record (metadata) route: two requests, once.
        assert counting.requests == [("GET", f"/programs/{a.id}/program"),
                                     ("GET", f"/programs/{a.id}/metadata")]
        for _ in range(3):
            assert s.load(a.id).source == "cache"
        # The record names its version: the exact version is now cached too.
        v = s.load_version(sig, "1.0.0")
        assert v.id == a.id and v.source == "cache"
        assert len(counting.requests) == 2
    # Another process on the same cache directory: from disk, no request at all.
    fresh = Counting()
    with client(server, tmp_path / "c", fresh) as s2:
        assert s2.load(a.id).source == "cache"
        assert s2.load_version(sig, "1.0.0").state == P1
        assert fresh.requests == []


@pytest.mark.parametrize("refresh", ["inline", "background"])
def test_alias_moves_are_seen_after_the_ttl(server: Server, tmp_path: Path, sig: str, refresh: str) -> None:
    ttl = 2.0  # above the time the writes in between take on the AWS emulators
    with client(server, tmp_path / "w") as writer, client(server, tmp_path / "r", alias_ttl=ttl, refresh=refresh) as reader:
        writer.store(P1, {"signature": sig, "version": "1.0.0"})
        writer.store(P2, {"signature": sig, "version": "1.1.0"})
        writer.set_alias(sig, "production", "1.0.0")
        assert reader.load_alias(sig, "production").version == "1.0.0"
        writer.set_alias(sig, "production", "1.1.0")  # by another client
        assert reader.load_alias(sig, "production").version == "1.0.0"  # within the TTL: cached
        assert reader.load_version(sig, "latest").version == "1.1.0"
        writer.store(P3, {"signature": sig, "version": "1.2.0"})
        time.sleep(ttl + 0.1)
        got = reader.load_alias(sig, "production")
        latest = reader.load_version(sig)
        if refresh == "inline":
            assert (got.version, got.source) == ("1.1.0", "server")
            assert latest.version == "1.2.0"
        else:
            # The cached target at once, refreshed in the background; the next load sees it.
            assert (got.version, got.source, got.stale) == ("1.0.0", "cache", False)
            assert latest.version == "1.1.0"
            reader.wait_for_refreshes()
            assert reader.load_alias(sig, "production").version == "1.1.0"
            assert reader.load_version(sig).version == "1.2.0"


def test_unchanged_alias_revalidates_with_a_304(server: Server, tmp_path: Path, sig: str, counting: Counting) -> None:
    with client(server, tmp_path / "c", counting, alias_ttl=0.2, refresh="inline") as s:
        s.store(P1, {"signature": sig, "version": "1.0.0"})
        s.set_alias(sig, "production", "1.0.0")
        s.load_alias(sig, "production")
        counting.requests.clear()
        time.sleep(0.3)
        again = s.load_alias(sig, "production")
        assert again.version == "1.0.0" and again.source == "server"
        # One conditional request (answered 304, no bytes), nothing else: record and bytes cached.
        assert counting.requests == [("GET", f"/signatures/{sig}/aliases/production/program")]
        # A rollback makes a new id with the same bytes: the 304 names it, one metadata read.
        rolled = s.rollback_to_version(sig, "1.0.0")
        s.set_alias(sig, "production", rolled["version"])
        counting.requests.clear()
        moved = s.load_alias(sig, "production")
        assert moved.version == rolled["version"] and moved.id == rolled["id"]
        assert moved.state == P1


def test_own_writes_are_seen_at_once(server: Server, tmp_path: Path, sig: str) -> None:
    with client(server, tmp_path / "c", alias_ttl=3600) as s:
        a = s.store(P1, {"signature": sig})
        assert s.load_version(sig).id == a.id
        b = s.store(P2, {"signature": sig})
        assert s.load_version(sig).id == b.id  # store invalidated latest
        s.set_alias(sig, "production", a.version)
        assert s.load_alias(sig, "production").id == a.id
        s.set_alias(sig, "production", b.version)
        assert s.load_alias(sig, "production").id == b.id  # set_alias invalidated the alias
        rolled = s.rollback_to_version(sig, a.version)
        latest = s.load_version(sig)
        assert latest.id == rolled["id"] and latest.state == P1  # rollback invalidated latest
        s.remove_alias(sig, "production")
        with pytest.raises(NotFound):
            s.load_alias(sig, "production")
        s.delete(rolled["id"])
        with pytest.raises(NotFound):
            s.load(rolled["id"])  # delete dropped the cached program
        assert s.load_version(sig).id == b.id


def test_cache_is_keyed_by_url_and_project(server: Server, tmp_path: Path, sig: str) -> None:
    cache = tmp_path / "shared"
    with client(server, cache, project="alpha") as alpha, client(server, cache, project="beta") as beta:
        a = alpha.store(P1, {"signature": sig})
        b = beta.store(P2, {"signature": sig})
        assert a.project == "alpha" and b.project == "beta" and a.version == b.version == "1.0.0"
        assert alpha.load_version(sig).state == P1
        assert beta.load_version(sig).state == P2
        assert alpha.load_version(sig, "1.0.0").id == a.id
        assert beta.load_version(sig, "1.0.0").id == b.id
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    with ProgramStorage("http://127.0.0.1:9", cache_dir=cache, project="alpha", retries=0) as other:
        with pytest.raises(Unavailable):
            other.load_version(sig, "1.0.0")  # another URL: another namespace, nothing cached


def test_thread_safe_with_one_connection_pool(server: Server, tmp_path: Path, sig: str) -> None:
    with client(server, tmp_path / "c", alias_ttl=0.05) as s:
        ids = [s.store({"n": i, "text": "x" * i}, {"signature": sig}).id for i in range(20)]
        s.set_alias(sig, "production", "1.0.5")

        def work(i: int) -> None:
            p = s.load(ids[i % 20])
            assert p.state["n"] == i % 20
            assert s.load_alias(sig, "production").state["n"] == 5
            if i % 10 == 0:
                s.store({"n": 100 + i}, {"signature": sig})
            s.load_version(sig)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(200)))
        s.wait_for_refreshes()
        assert len(s.list_versions(sig)) == 40
