"""Record a benchmark's results: JSON under benchmarks/results/ and a section in RESULTS.md.

Also the benchmarks' ``--smoke`` mode (:func:`session`): tiny sizes that run a benchmark end to
end in seconds, so that one whose library calls have changed fails ``tests/test_benchmarks.py``
rather than its next real run. A smoke run records into a temporary folder, never here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import random
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
_destination = HERE  # where record() writes: HERE, or a smoke session's temporary folder


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
    """Write ``results`` to ``results/<name>.json`` and append ``table`` with provenance to RESULTS.md
    (in a smoke session: to the session's temporary folder instead)."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    date = datetime.date.today().isoformat()
    meta = {"command": command, "machine": machine(), "date": date}
    root = _destination
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / f"{name}.json").write_text(json.dumps({**meta, **results}, indent=2) + "\n")
    with (root / "RESULTS.md").open("a") as f:
        f.write(f"\n### {name} ({date})\n\n`{command}`\n\nMachine: {meta['machine']}\n\n{table}\n")
    if root != HERE:
        print(f"(smoke: {name} recorded in {root}, which is deleted; benchmarks/ is untouched)")


def record_plot(name: str, path: Path) -> None:
    """Copy the plot ``path`` to ``results/<name>.png`` beside the recorded results (in a smoke
    session: into its temporary folder), where the documentation's gallery shows it."""
    (_destination / "results").mkdir(parents=True, exist_ok=True)
    (_destination / "results" / f"{name}.png").write_bytes(Path(path).read_bytes())


# --- smoke mode -------------------------------------------------------------------------------

SMOKE_HELP = (
    "a smoke test: tiny sizes and tiny stand-ins for the corpora, seconds on one CPU thread (half a "
    "minute with NumPyro's compilations); nothing is written to benchmarks/ (flags given beside it "
    "override its sizes)"
)
# the tiny corpora: documents / sentences (or dialogues) per split
TINY_SPLITS = {"train": 48, "valid": 16, "test": 16}
# sizes of fabula's embedded synthetic sentence corpus under --smoke
SYNTHETIC_SENTENCES = {"num_train": 48, "num_valid": 16, "num_test": 16}


@contextlib.contextmanager
def session(parser: argparse.ArgumentParser, argv=None, **tiny) -> Iterator[argparse.Namespace]:
    """Parse a benchmark's arguments, with ``--smoke``; the benchmark runs inside the block.

    Without ``--smoke`` this is ``parser.parse_args(argv)``. With it, ``tiny`` replaces the
    parser's defaults (flags given on the command line still win) and, for the block, results
    are recorded in a temporary folder and ``--data-dir``, unless given another value, is a
    folder of tiny corpora in the real ones' formats (:func:`tiny_corpora`), which fabula's
    dataset registry accepts meanwhile; both are deleted afterwards. (Run folders that a
    benchmark makes with ``tempfile`` are left where they are, as in a real run.)
    """
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    real_data_dir = parser.get_default("data_dir")
    args = parser.parse_args(argv)
    if not args.smoke:
        yield args
        return
    parser.set_defaults(**tiny)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="benchmark-smoke-")))
        stack.enter_context(_recording_in(folder / "recorded"))
        if getattr(args, "data_dir", None) is not None and args.data_dir == real_data_dir:
            args.data_dir = str(stack.enter_context(tiny_corpora(folder / "data")))
        yield args


def synthetic_sizes(args) -> dict:
    """Keyword sizes for ``fabula.data.synthetic.synthetic_sentence_corpus``: tiny under
    ``--smoke``, its defaults otherwise."""
    return dict(SYNTHETIC_SENTENCES) if getattr(args, "smoke", False) else {}


@contextlib.contextmanager
def _recording_in(folder: Path) -> Iterator[None]:
    global _destination
    saved, _destination = _destination, folder
    try:
        yield
    finally:
        _destination = saved


@contextlib.contextmanager
def tiny_corpora(folder: Path, seed: int = 0) -> Iterator[Path]:
    """Write tiny random stand-ins for 20news, ptb and dailydialog (:data:`TINY_SPLITS` items
    per split, a few dozen words) into ``folder``, in the files and formats of the real ones,
    and, for the block, have fabula's dataset registry expect their sha256 instead of the real
    files'; ``folder`` serves as a ``--data-dir``."""
    from fabula.data.registry import DATASETS, sha256_of

    rng = random.Random(seed)
    words = [f"w{i:02d}" for i in range(40)]
    zipf = [1 / rank for rank in range(1, len(words) + 2)]

    def sentence() -> str:
        return " ".join(rng.choices([*words, "<unk>"], zipf, k=rng.randint(2, 9)))

    news = folder / "20news"
    news.mkdir(parents=True)
    (news / "vocab.new").write_text("".join(f"{w} {rng.randint(1, 99)}\n" for w in words))
    for split in ("train", "test"):
        lines = []
        for _ in range(TINY_SPLITS[split]):
            ids = sorted(rng.sample(range(1, len(words) + 1), rng.randint(3, 12)))
            lines.append(" ".join([str(rng.randint(0, 19)), *(f"{i}:{rng.randint(1, 4)}" for i in ids)]))
        (news / f"{split}.feat").write_text("\n".join(lines) + "\n")
    ptb = folder / "ptb"
    ptb.mkdir()
    for split, n in TINY_SPLITS.items():
        (ptb / f"ptb.{split}.txt").write_text("".join(f" {sentence()} \n" for _ in range(n)))
    for split, name in (("train", "train"), ("valid", "validation"), ("test", "test")):
        dialog = folder / "dailydialog" / name
        dialog.mkdir(parents=True)
        turns = [rng.randint(2, 4) for _ in range(TINY_SPLITS[split] // 3)]
        files = {
            "dialogues.txt": ["".join(f"{sentence()} __eou__ " for _ in range(t)) for t in turns],
            "dialogues_act.txt": [" ".join(str(rng.randint(1, 4)) for _ in range(t)) for t in turns],
            "dialogues_emotion.txt": [" ".join(str(rng.randint(0, 6)) for _ in range(t)) for t in turns],
        }
        for file, lines in files.items():
            (dialog / file).write_text("\n".join(lines) + "\n")

    saved = {name: DATASETS[name] for name in ("20news", "ptb", "dailydialog")}
    for name, spec in saved.items():
        digests = {f.name: sha256_of(folder / spec.folder / f.name) for f in spec.files}
        files = tuple(dataclasses.replace(f, sha256=digests[f.name]) for f in spec.files)
        DATASETS[name] = dataclasses.replace(spec, files=files)
    try:
        yield folder
    finally:
        DATASETS.update(saved)
