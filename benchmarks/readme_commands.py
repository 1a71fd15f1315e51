"""The README's `fabula compare` and `fabula diagnose` commands run verbatim in a scratch folder,
after the README's main job (`fabula train nvdm --out runs/demo`), each timed beside the time the
README states for it. The commands take the fabula default of torch threads (one on a 2-core
machine); ``tests/test_first_hour.py`` checks that every command here is in the README with
the time stated here.

    python benchmarks/readme_commands.py            # about 10 minutes on 2 cores
    python benchmarks/readme_commands.py --larger   # also the larger comparison (about 75 minutes)

Prints a markdown table (command, stated and measured minutes) and each comparison's table with
its ordering lines, and records them (RESULTS.md, results/readme_commands.json, and the plots of
the comparisons that keep a folder, results/readme_commands_*.png).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_log import record, record_plot, session

MAIN_JOB = "fabula train nvdm --out runs/demo"

FIRST_TRY = "fabula compare --fixed-story"
LARGER = "fabula compare --inference vae svi:20 vae+svi:20 sa-vae:20 --epochs 10 --train-size 5000 --anneal linear:500 --out cmp/larger"
DIAGNOSE = (
    "fabula diagnose runs/demo --inference nuts --items 0:10 --out diag/nuts",
    "fabula diagnose runs/demo --inference vae --items 0:10 --out diag/vae",
    "fabula diagnose runs/demo --inference nuts --backend numpyro --items 0:10 --out diag/nuts-jax",
    "fabula diagnose runs/demo --inference refine:20 --against-nuts --backend numpyro --items 0:5 --out diag/refine",
)

STATED_MINUTES = {
    FIRST_TRY: 4,
    LARGER: 70,
    DIAGNOSE[0]: 2,
    DIAGNOSE[1]: 1,
    DIAGNOSE[2]: 1,
    DIAGNOSE[3]: 1,
}
"""What the README says each command takes on a 2-core machine, in minutes (at most)."""

SMOKE_FLAGS = {
    FIRST_TRY: "--train-size 20 --test-size 4 --samples 2 --seeds 2 --epochs 1 --inference vae svi:2",
    LARGER: "--train-size 20 --test-size 4 --samples 2 --seeds 1 --epochs 1 --inference vae sa-vae:1",
    **{command: "--samples 4 --warmup 4 --chains 1 --items 0:1" for command in DIAGNOSE},
}
"""What a smoke run adds to each command: tiny sizes, so that the commands' flags are checked."""


def run(command: str, workdir: Path, extra: str = "") -> tuple[float, str]:
    """Wall seconds and stdout of ``command`` (a README line, ``fabula ...``) run in ``workdir``."""
    argv = [sys.executable, "-m", "fabula", *shlex.split(command)[1:], *shlex.split(extra)]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--larger", action="store_true", help="also the README's larger comparison")
    p.add_argument("--main-epochs", type=int, default=30, help="epochs of the main job (the README's: 30)")
    with session(p, argv, main_epochs=1) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    commands = [FIRST_TRY, *([LARGER] if args.larger else []), *DIAGNOSE]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run(MAIN_JOB, work, f"--epochs {args.main_epochs} --quiet")
        for command in commands:
            seconds, out = run(command, work, SMOKE_FLAGS[command] if args.smoke else "")
            orderings = [line for line in out.splitlines() if line.startswith("by mean")]
            results[command] = {
                "seconds": seconds,
                "stated_minutes": STATED_MINUTES[command],
                "orderings": orderings,
                "table": [line for line in out.splitlines() if line.startswith("|")],
            }
            print(f"{command}: {seconds / 60:.1f} min", flush=True)
            if orderings:
                print("\n".join(orderings), flush=True)
        for command in commands:  # the comparisons that kept their folder: their plots
            out = shlex.split(command)
            if out[1] == "compare" and "--out" in out:
                record_plot(
                    f"readme_commands_{Path(out[out.index('--out') + 1]).name}",
                    work / out[out.index("--out") + 1] / "compare.png",
                )
    lines = ["| command | stated (min) | measured (min) | within |", "|---|---|---|---|"]
    for command, r in results.items():
        minutes = r["seconds"] / 60
        lines.append(
            f"| `{command}` | {r['stated_minutes']} | {minutes:.1f} | {minutes <= r['stated_minutes']} |"
        )
    tables = [
        "\n".join([f"`{command}`:", "", *r["table"], "", *r["orderings"]])
        for command, r in results.items()
        if r["table"]
    ]
    table = "\n\n".join(["\n".join(lines), *tables])
    print(table)
    record("readme_commands", {"results": results}, table)
    return results


if __name__ == "__main__":
    main()
