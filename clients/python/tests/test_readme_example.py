"""The README's "Use from DSPy" example runs as written (against this test's server)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use from DSPy", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(server, tmp_path) -> None:
    code = example()
    assert "http://127.0.0.1:8080" in code and len(code.strip().splitlines()) <= 15
    code = code.replace("http://127.0.0.1:8080", server.url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={"DSPY_STORAGE_CACHE_DIR": str(tmp_path / "cache"),
                                            "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    version, sha, answer = out.stdout.split()
    assert answer == "Paris" and len(sha) == 12 and re.fullmatch(r"\d+\.\d+\.\d+", version)
