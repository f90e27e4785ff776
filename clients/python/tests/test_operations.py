"""Every other method against the real server: performance tracking (record ids make appends
safe to retry), optimization runs, search (lazy pages), similar, aggregate, time series,
metadata, diff, prompt, retention, archive, backups, report, health."""

from __future__ import annotations

import datetime as dt
import uuid

from conftest import Counting
from programs import BUILDERS

from dspy_storage import ProgramStorage, capture_environment_info


def test_performance_tracking(storage: ProgramStorage, sig: str) -> None:
    p = storage.store(BUILDERS["predict"](), {"signature": sig})
    one = storage.record_performance(p.id, {"accuracy": 0.9, "latency": 1.2}, record_id="eval-1")
    again = storage.record_performance(p.id, {"accuracy": 0.9, "latency": 1.2}, record_id="eval-1")
    assert again["ids"] == one["ids"] and again["already_recorded"] == 1
    now = dt.datetime.now(dt.timezone.utc)
    # After the program was stored, 1 ms apart (the server refuses earlier and future times).
    records = [{"metrics": {"accuracy": i / 2500}, "timestamp": now + dt.timedelta(milliseconds=i)}
               for i in range(2500)]
    summary = storage.record_many(p.id, records)
    assert summary["recorded"] == 2500 and len(summary["ids"]) == 2500
    history = storage.get_performance_history(p.id, time_range=dt.timedelta(days=1))
    assert len(history) == 2501  # eval-1 once
    stamps = [h["timestamp"] for h in history]
    assert stamps == sorted(stamps)
    env = [h for h in history if h.get("record_id") == "eval-1"][0]["environment"]
    assert env == capture_environment_info() and env["python_version"] and env["hostname"]
    assert env["dspy_version"] == "3.4.1"
    late = storage.get_performance_history(p.id, since=now + dt.timedelta(milliseconds=2400))
    assert [h["metrics"]["accuracy"] for h in late] == [i / 2500 for i in range(2400, 2500)]
    trends = storage.analyze_performance_trends(p.id, days=7)
    assert trends["records"] == 2501 and trends["metrics"]["accuracy"]["trend"] in ("improving", "stable")
    run = storage.record_optimization_run(sig, "miprov2", parameters={"auto": "light"},
                                          trials=[{"params": {"k": 1}, "score": 0.8}], best_score=0.8,
                                          duration_s=12.5, program_ids=[p.id])
    got = storage.get_optimization_run(run["id"])
    assert got["method"] == "miprov2" and got["program_ids"] == [p.id]
    assert [r["id"] for r in storage.list_optimization_runs(signature=sig)] == [run["id"]]


def test_search_pages_lazily_and_the_query_routes(server, tmp_path, sig: str) -> None:
    counting = Counting()
    with ProgramStorage(server.url, cache_dir=tmp_path, transport=counting) as s:
        tag = f"t{uuid.uuid4().hex[:8]}"
        ids = [s.store({"n": i}, {"signature": sig, "performance": i / 10, "tags": [tag],
                                  "optimization_method": "miprov2" if i % 2 else "bootstrap"}).id
               for i in range(5)]
        counting.requests.clear()
        found = s.search(f"signature:{sig} performance>=0.1", sort="-performance")
        assert counting.requests == []  # lazy: nothing asked yet
        first = next(found)
        assert first["id"] == ids[4]
        assert [r["id"] for r in found] == ids[3:0:-1]
        structured = list(s.search({"signature": sig, "optimization_method": ["miprov2"]},
                                   sort=[{"performance": "asc"}]))
        assert [r["id"] for r in structured] == [ids[1], ids[3]]
        assert len(list(s.search(f"tag:{tag}", limit=3))) == 3
        similar = s.find_similar_programs(ids[0], similarity_threshold=0.1)
        assert ids[0] not in [r["id"] for r in similar] and similar
        groups = s.aggregate({"signature": sig, "group_by": "optimization_method",
                              "metrics": {"n": {"count": "id"}, "best": {"max": "performance"}}})
        assert {g["key"]: g["n"] for g in groups["groups"]} == {"bootstrap": 3, "miprov2": 2}
        ts = s.time_series(signature=sig, metric="performance", interval="day", time_range="2d")
        assert sum(p["count"] for p in ts["points"]) == 5


def test_versions_metadata_and_operations(storage: ProgramStorage, sig: str) -> None:
    a = storage.store(BUILDERS["predict"](), {"signature": sig, "version": "1.0.0", "tags": ["x"]})
    b = storage.store_version(BUILDERS["predict"](), "1.1.0", {"signature": sig, "description": "second"})
    assert [v["version"] for v in storage.list_versions(sig)] == ["1.0.0", "1.1.0"]
    assert any(s["signature"] == sig for s in storage.list_signatures())
    meta = storage.load_metadata(a.id)
    assert "program" not in meta and meta["metadata"]["tags"] == ["x"]
    new = storage.update_metadata(a.id, add_tags=["production"], remove_tags=["x"], set={"team": "ml"})
    assert new["metadata"]["tags"] == ["production"] and new["metadata"]["team"] == "ml"
    assert storage.load(a.id).metadata["team"] == "ml"
    d = storage.diff(sig, "1.0.0", "1.1.0")
    assert isinstance(d, dict)
    assert "Answer in one word" in storage.prompt(b.id)
    storage.set_alias(sig, "production", "1.0.0")
    storage.set_alias(sig, "production", "1.1.0", expected_version="1.0.0")
    assert storage.load_alias(sig, "production").id == b.id
    plan = storage.cleanup_old_versions({"keep_latest": 1})
    assert plan["dry_run"] is True and "kept" in plan
    storage.archive(a.id)
    assert storage.load_metadata(a.id)["status"] == "archived"
    assert storage.restore_from_archive(a.id)["status"] == "active"
    report = storage.generate_report()
    assert report["total_programs"] >= 2
    assert storage.health()["status"] == "ok"


def test_backups(make_server, tmp_path, sig: str) -> None:
    server = make_server()
    with ProgramStorage(server.url, cache_dir=tmp_path) as s:
        a = s.store({"n": 1}, {"signature": sig})
        made = s.create_backup("py-backup")
        assert made["backup_name"] == "py-backup" and made["programs_count"] == 1
        assert [b["backup_name"] for b in s.list_backups()] == ["py-backup"]
        restored = s.restore_backup("py-backup")
        assert restored["already_present_programs"] == 1
        assert s.load(a.id).state == {"n": 1}
