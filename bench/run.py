"""`make bench` / `vidgate bench`: run every benchmark in one go, print the figures, write JSON.

Each benchmark measures its own baseline in the same run and reports a ratio against it, so the
figures compare across machines; absolute numbers are printed for context only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import api_bench  # noqa: E402
import gpu_bench  # noqa: E402
import relay_bench  # noqa: E402
import renderer_bench  # noqa: E402
import scale_bench  # noqa: E402

BENCHMARKS: dict[str, tuple[str, Callable[[], dict[str, object]]]] = {
    "renderer": ("(a) CPU renderer vs encoding the same frames alone", renderer_bench.run),  # type: ignore[dict-item]
    "api": ("(b) GET /v1/tasks/{id} vs a bare Starlette JSON endpoint", api_bench.run),
    "relay": ("(c) one worker relaying 2,000 upstream jobs in flight", relay_bench.run),
    "scale": ("(d) PostgreSQL vs SQLite: submits, claims, 1/2/4 workers", scale_bench.run),
    "gpu": ("(e) diffusers engine through vidgate vs direct (needs CUDA)", gpu_bench.run),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--only", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    results: dict[str, object] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    all_pass = True
    for name, (title, run) in BENCHMARKS.items():
        if args.only and name != args.only:
            continue
        print(f"== {title}", flush=True)
        figures = run()
        results[name] = figures
        # A benchmark that cannot run here (no GPU) says so and does not count as a failure.
        all_pass = all_pass and (bool(figures.get("pass")) or "skipped" in figures)
        for key, value in figures.items():
            print(f"   {key:24} {value}")
    results["pass"] = all_pass
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.output}; all targets met: {all_pass}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
