"""How many torch threads a `fabula` command should take on a shared machine: the command's wall
time with 1 thread and with every core, on an idle machine and beside another process that
keeps torch's default threads busy (matrix products), as a person's other work would.

    python benchmarks/threads.py          # about 5 minutes on 2 cores

Each command runs ``--repeats`` times per condition (alternating thread counts); the median is
reported, and a run past ``--cap`` seconds is stopped and counted as infinitely long. Prints a
markdown table and records it (RESULTS.md, results/threads.json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_log import record, session

LOAD = "import torch\na = torch.randn(1500, 1500)\nwhile True:\n    a = torch.tanh(a @ a) \n"
"""The other work: torch's default threads multiplying matrices until stopped."""


def commands(workdir: Path, epochs: int) -> dict[str, list[str]]:
    """The commands timed: a short training of the README's main job, and its IW evaluation."""
    run = str(workdir / "demo")
    return {
        f"train nvdm ({epochs} epochs)": [
            *("train", "nvdm", "--epochs", str(epochs), "--quiet", "--no-reference", "--out"),
            str(workdir / "t{n}"),
        ],
        "evaluate iw:50": ["evaluate", run, "--estimator", "iw:50", "--json"],
    }


def timed(argv: list[str], threads: int, cap: float) -> float:
    """Wall seconds of ``fabula ARGV --threads N`` (``inf`` past ``cap``)."""
    start = time.perf_counter()
    try:
        subprocess.run(
            [sys.executable, "-m", "fabula", *argv, "--threads", str(threads)],
            check=True,
            capture_output=True,
            timeout=cap,
            env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
        )
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs of the timed training")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cap", type=float, default=120.0, help="seconds after which a run is stopped")
    with session(p, argv, epochs=1, repeats=1) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    cores = os.cpu_count() or 1
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "fabula", "train", "nvdm", "--epochs", str(args.epochs), "--quiet"]
            + ["--no-reference", "--out", str(work / "demo"), "--threads", "1"],
            check=True,
            capture_output=True,
        )
        for load in (False, True):
            other = subprocess.Popen([sys.executable, "-c", LOAD]) if load else None
            try:
                for name, template in commands(work, args.epochs).items():
                    times = {1: [], cores: []}
                    for i in range(args.repeats):
                        for n in times:
                            argv_n = [a.replace("{n}", f"{n}-{i}-{int(load)}") for a in template]
                            times[n].append(timed(argv_n, n, args.cap))
                    results[f"{name}, {'beside a 2-thread torch job' if load else 'idle'}"] = {
                        str(n): statistics.median(t) for n, t in times.items()
                    }
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
    lines = [f"| command, machine | 1 thread (s) | {cores} threads (s) | {cores} / 1 |", "|---|---|---|---|"]
    for name, r in results.items():
        one, many = r["1"], r[str(cores)]
        lines.append(f"| {name} | {one:.1f} | {many:.1f} | {many / one:.2f} |")
    table = "\n".join(lines)
    print(table)
    record("threads", {"cores": cores, "repeats": args.repeats, "results": results}, table)
    return {"cores": cores, "results": results}


if __name__ == "__main__":
    main()
