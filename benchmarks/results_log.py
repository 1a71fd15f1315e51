"""Record a benchmark's results: JSON under benchmarks/results/ and a section in RESULTS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"Python {platform.python_version()}"
    )


def record(name: str, results: dict, table: str) -> None:
    """Write ``results`` to ``results/<name>.json`` and append ``table`` with provenance to RESULTS.md."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    date = datetime.date.today().isoformat()
    meta = {"command": command, "machine": machine(), "date": date}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps({**meta, **results}, indent=2) + "\n")
    with (HERE / "RESULTS.md").open("a") as f:
        f.write(f"\n### {name} ({date})\n\n`{command}`\n\nMachine: {meta['machine']}\n\n{table}\n")
