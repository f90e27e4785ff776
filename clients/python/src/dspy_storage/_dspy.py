"""DSPy objects, when `dspy` is importable: a module's saved JSON, and loading state into one."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

SIGNATURE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def is_module(program: Any) -> bool:
    """A DSPy module (duck-typed: what `module.save`/`module.load` need)."""
    return all(callable(getattr(program, m, None)) for m in ("dump_state", "load_state", "save"))


def program_bytes(program: Any) -> bytes:
    """The JSON text to store for ``program``.

    * a DSPy module: exactly what ``program.save("x.json")`` writes (state only, never pickle),
      without the final newline that ``save`` appends after the JSON value;
    * ``bytes``/``str``: JSON text already saved (checked to be JSON), kept as it is;
    * any other JSON value (dict, list, ...): ``json.dumps`` of it, keys in their order.
    """
    if is_module(program):
        with tempfile.TemporaryDirectory(prefix="dspy-storage-") as d:
            path = Path(d) / "program.json"
            program.save(str(path))
            data = path.read_bytes()
        return data.rstrip()
    if isinstance(program, (bytes, bytearray)):
        data = bytes(program).strip()
        json.loads(data)
        return data
    if isinstance(program, str):
        data = program.strip().encode()
        json.loads(data)
        return data
    try:
        return json.dumps(program, ensure_ascii=False).encode()
    except TypeError as e:
        raise TypeError(
            "program must be a dspy.Module, JSON text, or a JSON value (dict/list): " f"{e}"
        ) from e


def derive_signature(program: Any) -> str | None:
    """A signature name when the program names one: a custom module's class name, a built-in
    predictor's named signature class, or a DSPy.rb envelope's ``signature_class``."""
    name: Any = None
    if is_module(program):
        cls = type(program)
        if cls.__module__.split(".")[0] == "dspy":
            sig = getattr(program, "signature", None)
            if sig is None and hasattr(program, "predict"):
                sig = getattr(program.predict, "signature", None)
            name = getattr(sig, "__name__", None)
            if name == "StringSignature":
                name = None
        else:
            name = cls.__name__
    elif isinstance(program, dict):
        meta = program.get("metadata") if isinstance(program.get("metadata"), dict) else {}
        state = (program.get("program_data") or {}).get("state") if isinstance(
            program.get("program_data"), dict
        ) else None
        name = meta.get("signature_class") or (state or {}).get("signature_class")
    if isinstance(name, str) and SIGNATURE_RE.match(name):
        return name
    return None


def load_into(module: Any, data: bytes, state: Any) -> Any:
    """Loads ``state`` into ``module`` the way ``module.load(path)`` would: through a temporary
    ``.json`` file holding ``data`` (so DSPy checks the saved dependency versions and warns as it
    does), or ``load_state`` for saved JSON that DSPy's ``load`` cannot read (no
    ``metadata.dependency_versions``)."""
    if not is_module(module):
        raise TypeError(f"into= must be a dspy.Module instance, not {type(module).__name__}")
    meta = state.get("metadata") if isinstance(state, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("dependency_versions"), dict):
        with tempfile.TemporaryDirectory(prefix="dspy-storage-") as d:
            path = Path(d) / "program.json"
            path.write_bytes(data)
            module.load(str(path))
    else:
        module.load_state(state)
    return module
