"""Promotion policies from Python: a gate refusing a move (``PolicyViolation``, a ``Conflict``,
naming the failed requirement with the measured value), an admin's override, a bad policy
(``InvalidRequest`` naming the field) and the alias history — on every backend fixture."""

from __future__ import annotations

import pytest

from dspy_storage import Conflict, InvalidRequest, NotFound, PolicyViolation, ProgramStorage


def test_a_gate_refuses_a_move_and_the_history_shows_it(storage: ProgramStorage, sig: str) -> None:
    good = storage.store({"p": 1}, {"signature": sig, "version": "1.0.0"})
    weak = storage.store({"p": 2}, {"signature": sig, "version": "1.1.0"})
    for value in (0.95, 0.93):
        storage.record_performance(good.id, {"accuracy": value}, environment={"name": "eval"})
    for value in (0.87, 0.878):
        storage.record_performance(weak.id, {"accuracy": value}, environment={"name": "eval"})
    assert storage.get_alias_policy(sig, "production") is None
    policy = storage.set_alias_policy(sig, "production", protected=True, require={
        "metric": "accuracy", "min": 0.9, "min_records": 2, "window": "7d",
        "environment": {"name": "eval"}})
    assert policy["protected"] is True and policy["require"]["min_records"] == 2
    assert storage.get_alias_policy(sig, "production")["rev"] == policy["rev"]

    moved = storage.set_alias(sig, "production", "1.0.0")
    assert moved["history"]["gate"]["passed"] is True
    with pytest.raises(PolicyViolation) as refused:
        storage.set_alias(sig, "production", "1.1.0")
    e = refused.value
    assert isinstance(e, Conflict) and e.status == 409 and e.code == "policy_violation"
    assert "accuracy mean 0.874 over 2 records in the last 7d with environment name=eval < min 0.9" \
        in e.message, e.message
    assert storage.load_alias(sig, "production").version == "1.0.0"

    over = storage.set_alias(sig, "production", "1.1.0", override_reason="hotfix, eval tomorrow")
    assert over["version"] == "1.1.0" and over["history"]["action"] == "override"

    history = storage.alias_history(sig, "production")
    assert [h["action"] for h in history] == ["override", "refused", "move", "policy_set"]
    assert history[0]["override_reason"] == "hotfix, eval tomorrow"
    assert history[1]["to_version"] == "1.1.0" and history[1]["from_version"] == "1.0.0"
    assert history[1]["gate"]["records"] == 2 and history[1]["gate"]["passed"] is False
    assert history[1]["by"] == "anonymous"
    assert [h["action"] for h in storage.alias_history(sig, "production", limit=1)] == ["override"]

    storage.remove_alias_policy(sig, "production")
    assert storage.get_alias_policy(sig, "production") is None
    with pytest.raises(NotFound):
        storage.remove_alias_policy(sig, "production")
    assert storage.alias_history(sig, "production")[0]["action"] == "policy_removed"


def test_a_bad_policy_is_an_invalid_request_naming_the_field(storage: ProgramStorage, sig: str) -> None:
    storage.store({"p": 1}, {"signature": sig})
    for require, field in [({"metric": "accuracy", "min_records": -1}, "require.min_records"),
                           ({"metric": "acc uracy"}, "require.metric"),
                           ({"metric": "accuracy", "window": "a week"}, "require.window")]:
        with pytest.raises(InvalidRequest) as bad:
            storage.set_alias_policy(sig, "production", require=require)
        assert bad.value.field == field, bad.value
    assert storage.get_alias_policy(sig, "production") is None
    assert storage.alias_history(sig, "production") == []
