"""Real DSPy programs round-trip: store(module) → load(..., into=Fresh()) → the same state, and the
stored JSON is exactly what ``module.save()`` writes, keys in order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import FIXTURES
from programs import BUILDERS, QA, fresh

from dspy_storage import InvalidRequest, ProgramStorage


def pairs(text: bytes):
    """The JSON value with every object as a list of (key, value) pairs: order-sensitive."""
    return json.loads(text, object_pairs_hook=lambda kv: [(k, v) for k, v in kv])


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_module_round_trip(storage: ProgramStorage, sig: str, kind: str, tmp_path: Path) -> None:
    module = BUILDERS[kind]()
    saved = tmp_path / "saved.json"
    module.save(str(saved))
    written = saved.read_bytes()

    stored = storage.store(module, {"signature": sig, "version": "1.2.0",
                                    "optimization_method": "manual", "performance": 0.9})
    assert (stored.signature, stored.version, stored.source) == (sig, "1.2.0", "server")
    assert stored.program is module
    assert stored.sha256 == hashlib.sha256(written.rstrip()).hexdigest()

    # A fresh client (empty memory, empty disk cache): the bytes come from the server.
    with ProgramStorage(storage.url, cache_dir=tmp_path / "other-cache") as other:
        target = fresh(kind)
        loaded = other.load_version(sig, "1.2.0", into=target)
        assert loaded.source == "server" and not loaded.stale
        assert loaded.program is target
        assert target.dump_state() == module.dump_state()
        # Exactly the JSON module.save() writes: the same text (save ends it with a newline after
        # the value), so the same keys in the same order, the same escapes and number forms.
        assert loaded.raw == written.rstrip()
        assert pairs(loaded.raw) == pairs(written)
        assert loaded.state == json.loads(written)
        assert (loaded.id, loaded.sha256, loaded.size) == (stored.id, stored.sha256, len(written.rstrip()))
        assert loaded.metadata["optimization_method"] == "manual"
        assert loaded.metadata["performance"] == 0.9
        assert loaded.status == "active" and loaded.project == "default"
        assert loaded.created_at == stored.created_at

        # Without into=: the saved JSON.
        by_id = other.load(stored.id)
        assert by_id.program == json.loads(written) and by_id.source == "cache"
        # Loading into a fresh module a second time works from the cache the same way.
        again = other.load(stored.id, into=fresh(kind))
        assert again.program.dump_state() == module.dump_state()


def test_signature_derived_from_a_custom_module(storage: ProgramStorage) -> None:
    module = BUILDERS["qa_module"]()
    stored = storage.store(module)
    assert stored.signature == "QA"
    assert storage.load_version("QA", stored.version, into=QA()).program.dump_state() == module.dump_state()
    with pytest.raises(InvalidRequest) as e:
        storage.store(BUILDERS["predict"]())  # a string signature names nothing
    assert e.value.field == "metadata.signature"


@pytest.mark.parametrize("name", ["dspy_react_optimized.json", "dspyrb_chain_of_thought_miprov2.json"])
def test_real_saved_programs_byte_for_byte(storage: ProgramStorage, sig: str, name: str,
                                           tmp_path: Path) -> None:
    text = (FIXTURES / name).read_bytes()
    stored = storage.store(text, {"signature": sig})
    with ProgramStorage(storage.url, cache_dir=tmp_path / "c2") as other:
        loaded = other.load(stored.id)
    assert loaded.raw == text.strip()
    assert pairs(loaded.raw) == pairs(text)
    # A dict is stored as its JSON (keys in order) and read back equal.
    as_dict = json.loads(text)
    again = storage.store(as_dict, {"signature": sig})
    assert storage.load(again.id).state == as_dict
    if name.startswith("dspyrb"):
        derived = storage.store(as_dict)
        assert derived.signature == "ManageExtractionConversation"
