"""Run every benchmark: ``python -m benchmarks [--quick]`` (what ``make bench`` does)."""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = ["noise", "ingest", "secagg", "accuracy", "load", "segmentation", "reach"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="the quick variant of each")
    args = parser.parse_args(argv)
    failed = []
    for name in BENCHMARKS:
        print(f"== benchmarks.{name} ==", flush=True)
        start = time.monotonic()
        module = importlib.import_module(f"benchmarks.{name}")
        code = module.main(["--quick"] if args.quick else [])
        print(f"== {name}: exit {code} in {time.monotonic() - start:.0f} s ==\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
