"""``capture_environment_info``: where a metric was measured (as DSPy.rb's documentation)."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
from typing import Any


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@functools.lru_cache(maxsize=1)
def _dspy_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("dspy")
    except PackageNotFoundError:
        try:
            return version("dspy-ai")
        except PackageNotFoundError:
            return None


def capture_environment_info() -> dict[str, Any]:
    """Python and DSPy versions, the host name, the platform and the git commit of the working
    directory (when it is in a repository)."""
    from . import __version__

    env: dict[str, Any] = {
        "python_version": platform.python_version(),
        "dspy_version": _dspy_version(),
        "hostname": socket.gethostname(),
        "platform": sys.platform,
        "client": f"dspy-storage-python/{__version__}",
    }
    commit = _git_commit()
    if commit:
        env["git_commit"] = commit
    return {k: v for k, v in env.items() if v is not None}
