"""``python -m dspy_storage``: fill the cache for a deploy, or show what the cache answers.

    python -m dspy_storage prefetch qa.Answer --alias production [--alias staging] [--version 1.2.0]
    python -m dspy_storage load qa.Answer --alias production      # prints source, stale, id, version

Both take ``--url``, ``--project``, ``--cache-dir`` (else the ``DSPY_STORAGE_*`` variables).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import ProgramStorage, StorageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspy_storage")
    parser.add_argument("command", choices=["prefetch", "load"])
    parser.add_argument("signature")
    parser.add_argument("--alias", action="append", default=[])
    parser.add_argument("--version", action="append", default=[])
    parser.add_argument("--url")
    parser.add_argument("--project")
    parser.add_argument("--cache-dir")
    parser.add_argument("--alias-ttl", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--offline", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    targets = [("alias", a) for a in args.alias] + [("version", v) for v in args.version]
    if not targets:
        targets = [("version", "latest")]
    with ProgramStorage(
        args.url,
        project=args.project,
        cache_dir=args.cache_dir,
        alias_ttl=args.alias_ttl,
        timeout=args.timeout,
        retries=args.retries,
        offline=args.offline or None,
        refresh="inline",  # one-shot: a background refresh would never be seen
    ) as storage:
        status = 0
        for kind, name in targets:
            try:
                if args.command == "prefetch":
                    p = storage.prefetch(args.signature, **{kind: name})
                elif kind == "alias":
                    p = storage.load_alias(args.signature, name)
                else:
                    p = storage.load_version(args.signature, name)
            except StorageError as e:
                print(f"{args.signature} {kind} {name}: {e}", file=sys.stderr)
                status = 1
                continue
            print(json.dumps({
                "signature": p.signature, kind: name, "id": p.id, "version": p.version,
                "sha256": p.sha256, "source": p.source, "stale": p.stale,
            }))
        return status


if __name__ == "__main__":
    sys.exit(main())
