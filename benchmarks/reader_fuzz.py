"""Fuzzing fabula's corpus readers: ``--inputs`` mutated inputs per public reader, drawn by the
generators of ``tests/test_reader_fuzz.py`` (``tests/reader_inputs.py``), each read and counted
as a clean error (a ``DataFormatError`` naming the file and, where one is at fault, the line),
accepted (a corpus that agrees with an independent reading of the file), a crash (any other
exception) or inconsistent (an accepted corpus that disagrees, or an error naming the wrong file
or line). Crashes and inconsistencies must be 0; the first of each is printed.

Input ``i`` of reader ``r`` is drawn from ``random.Random(f"{seed}:{r}:{i}")``, so a row is
reproducible from the command alone.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the generators' module
from reader_inputs import READERS, draw_case, judge
from results_log import record, session

KINDS = ("error", "accepted", "crash", "inconsistent")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=2000, help="mutated inputs per reader (default: 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true", help="print only; do not write results")
    with session(p, argv, inputs=20) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    rows, first_failures = {}, {}
    with tempfile.TemporaryDirectory(prefix="reader-fuzz-") as tmp:
        for name, reader in READERS.items():
            folder = Path(tmp) / name.replace(" ", "-")
            folder.mkdir()
            counts = Counter()
            start = time.perf_counter()
            for i in range(args.inputs):
                verdict = judge(reader, draw_case(reader, random.Random(f"{args.seed}:{name}:{i}")), folder)
                counts[verdict.kind] += 1
                if verdict.kind in ("crash", "inconsistent"):
                    first_failures.setdefault(f"{name}, {verdict.kind} (input {i})", verdict.detail)
            rows[name] = {
                "inputs": args.inputs,
                **{kind: counts[kind] for kind in KINDS},
                "seconds": round(time.perf_counter() - start, 2),
            }
    for where, detail in first_failures.items():
        print(f"--- {where}\n{detail}")
    table = "\n".join(
        [
            "| reader | inputs | clean errors | accepted | crashes | inconsistent | seconds |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {r['inputs']} | {r['error']} | {r['accepted']} | {r['crash']} | "
                f"{r['inconsistent']} | {r['seconds']:.1f} |"
                for name, r in rows.items()
            ),
        ]
    )
    print(table)
    results = {"seed": args.seed, "readers": rows}
    if not args.no_record:
        record("reader_fuzz", results, table)
    return results


if __name__ == "__main__":
    main()
