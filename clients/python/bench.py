"""Load latency of the Python client beside MLflow's DSPy flavor and prompt registry (figures, no
assertions): warm alias load from the cache, cold load over HTTP, and MLflow's
``mlflow.dspy.load_model("models:/…@production")`` / ``mlflow.genai.load_prompt("prompts:/…@production")``
on a SQLite registry with local-file artifacts.

    python3 -m venv ~/.cache/dspy-storage/python-bench-venv
    ~/.cache/dspy-storage/python-bench-venv/bin/pip install 'dspy==3.4.1' 'mlflow==3.17.2' ./clients/python
    ~/.cache/dspy-storage/python-bench-venv/bin/python clients/python/bench.py [--iters 200]

It starts ``dspy-storage serve`` (embedded backend, a temporary data dir) from ``$DSPY_STORAGE_BIN``,
else ``target/perf/dspy-storage``, else ``target/release``, else ``target/debug`` (the binary used
is printed: compare figures of one run only). MLflow is skipped when it is not importable.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parents[2]


def binary() -> Path:
    if os.environ.get("DSPY_STORAGE_BIN"):
        return Path(os.environ["DSPY_STORAGE_BIN"])
    for profile in ("perf", "release", "debug"):
        p = ROOT / "target" / profile / "dspy-storage"
        if p.exists():
            return p
    sys.exit("no dspy-storage binary: cargo build --profile perf -p dspy-storage-cli")


def program():
    import dspy

    qa = dspy.ChainOfThought("question -> answer")
    qa.predict.signature = qa.predict.signature.with_instructions("Answer the question. " * 40)
    qa.predict.demos = [
        dspy.Example(question=f"Question {i}? " * 5, reasoning="Because. " * 10, answer=f"A{i}")
        for i in range(16)
    ]
    return qa


def timed(fn: Callable[[], object], iters: int) -> tuple[float, float]:
    """(median, p99) in milliseconds."""
    fn()
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def row(name: str, figures: tuple[float, float], note: str = "") -> None:
    print(f"| {name} | {figures[0]:.3f} | {figures[1]:.3f} | {note} |")


def ours(iters: int, work: Path) -> None:
    import dspy

    from dspy_storage import ProgramStorage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_ = binary()
    server = subprocess.Popen(
        [str(bin_), "--data-dir", str(work / "data"), "serve", "--addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        print(f"dspy-storage: {bin_} (embedded backend)\n")
        with ProgramStorage(url, cache_dir=work / "cache") as s:
            stored = s.store(program(), {"signature": "bench.QA"})
            s.set_alias("bench.QA", "production", stored.version)
            print(f"program: {stored.size} bytes\n")
            print("| operation | median ms | p99 ms | |")
            print("|---|---:|---:|---|")
            s.load_alias("bench.QA", "production")
            row("warm alias load (memory cache)", timed(lambda: s.load_alias("bench.QA", "production"), iters))
            row("warm alias load into a module", timed(
                lambda: s.load_alias("bench.QA", "production", into=dspy.ChainOfThought("question -> answer")),
                iters), "incl. module.load")

        def from_disk() -> None:
            with ProgramStorage(url, cache_dir=work / "cache") as c:
                c.load_alias("bench.QA", "production")

        row("warm alias load (disk cache, new client)", timed(from_disk, iters), "new process's first load")

        def cold(load: Callable) -> Callable[[], None]:
            def run() -> None:
                with ProgramStorage(url, disk_cache=False, alias_ttl=0) as c:
                    load(c)
            return run

        row("cold load by id over HTTP", timed(cold(lambda c: c.load(stored.id)), iters), "2 requests")
        row("cold alias load over HTTP", timed(cold(lambda c: c.load_alias("bench.QA", "production")), iters),
            "2 requests")
        from dspy_storage._cache import ProgramCache

        with ProgramStorage(url, disk_cache=False) as c:
            def pooled() -> None:
                c.cache = ProgramCache(None, url, "default")  # empty: every load goes to the server
                c.load_alias("bench.QA", "production")

            row("cold alias load over HTTP, pooled connection", timed(pooled, iters), "2 requests")
        with ProgramStorage(url, disk_cache=False, alias_ttl=0, refresh="inline") as c:
            c.load_alias("bench.QA", "production")
            row("alias revalidation (304), pooled connection",
                timed(lambda: c.load_alias("bench.QA", "production"), iters), "1 request, no bytes")
    finally:
        server.terminate()
        server.wait(10)


def mlflow_side(iters: int, work: Path) -> None:
    try:
        import mlflow
        import mlflow.dspy  # noqa: F401
    except ImportError as e:
        print(f"\nMLflow: not importable ({e}); skipped")
        return
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # Artifacts under the temporary work dir (MLflow's default is ./mlruns in the current directory).
    mlflow.create_experiment("bench", artifact_location=(work / "mlflow-artifacts").as_uri())
    mlflow.set_experiment("bench")
    client = mlflow.MlflowClient()
    with mlflow.start_run():
        info = mlflow.dspy.log_model(program(), name="model", registered_model_name="bench-qa")
    version = info.registered_model_version
    client.set_registered_model_alias("bench-qa", "production", version)
    print(f"\nMLflow {mlflow.__version__} (SQLite registry, local-file artifacts)\n")
    print("| operation | median ms | p99 ms | |")
    print("|---|---:|---:|---|")
    n = max(10, iters // 10)
    row("mlflow.dspy.load_model('models:/bench-qa@production')",
        timed(lambda: mlflow.dspy.load_model("models:/bench-qa@production"), n), f"{n} iterations")
    template = str(program().predict.signature.instructions)
    prompt = mlflow.genai.register_prompt(name="bench-qa-prompt", template=template)
    mlflow.genai.set_prompt_alias("bench-qa-prompt", alias="production", version=prompt.version)
    row("mlflow.genai.load_prompt('prompts:/bench-qa-prompt@production')",
        timed(lambda: mlflow.genai.load_prompt("prompts:/bench-qa-prompt@production"), iters),
        "its alias cache")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dspy-storage-bench-") as d:
        ours(args.iters, Path(d))
        if not args.no_mlflow:
            mlflow_side(args.iters, Path(d))


if __name__ == "__main__":
    main()
