"""Every fenced code block of the README, checked as a reader would use it; a failure names the
block's line in README.md.

``python`` blocks run in the README's order in one namespace, as a reader pasting them into one
session would (a block uses what an earlier one defined), in a temporary working directory. The
README's relative ``../shared/data`` resolves there to the corpora beside the repository, as from
the repository's root; a block that reads a registered corpus absent from it is skipped, as the
integration tests are. Each block trains in seconds: the README's blocks are written so, on the
embedded synthetic corpora or small slices.

``bash`` blocks are parsed, never run (their commands name a user's files and runs, such as
``my_documents/`` or ``runs/demo``, which parsing does not need): continuation lines are joined,
``&&`` chains split and comments dropped; each ``fabula ...`` command, and the one that
``torchrun ... -m fabula`` starts, is parsed by :func:`fabula.cli.parser` (``--help`` counts as
parsed); ``export NAME=VALUE`` holds for the commands after it (``PYTHONPATH`` names folders of
the repository, where the parser finds a story's module); ``pip install`` may name only extras
that ``pyproject.toml`` declares; ``python examples/X.py`` and ``python benchmarks/X.py`` must name
files that exist; ``python -m`` may run pytest or sphinx. Any other line fails, so that a new kind
of line is taken into the check.
"""

import contextlib
import io
import os
import re
import shlex
import sys
import tomllib
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import fabula.cli
from fabula.data import DataFormatError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"
PYTHON_MODULES = ("pytest", "sphinx")
"""What the README's ``python -m`` lines may run."""


def blocks(language: str) -> list[tuple[int, str]]:
    """``(line of the opening fence in README.md, body)`` of each block fenced as ``language``."""
    text = README.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M)
    ]


PYTHON = blocks("python")
BASH = blocks("bash")


# python blocks


@pytest.fixture(scope="module")
def python_results(tmp_path_factory):
    """Run every python block in order; ``{fence line: None (ran), a skip reason or a failure}``."""
    root = tmp_path_factory.mktemp("readme")
    (root / "work").mkdir()
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED, target_is_directory=True)
    namespace = {"__name__": "readme"}
    results = {}
    before = os.getcwd()
    states = torch.get_rng_state(), np.random.get_state()
    try:
        os.chdir(root / "work")
        torch.manual_seed(0)
        for line, body in PYTHON:
            code = compile("\n" * line + body, str(README), "exec")  # tracebacks give README lines
            try:
                exec(code, namespace)
                results[line] = None
            except DataFormatError as e:
                if "missing file of dataset" in str(e):
                    results[line] = ("skip", f"reads a registered corpus absent from ../shared/data: {e}")
                else:
                    results[line] = ("fail", traceback.format_exc())
            except Exception:
                results[line] = ("fail", traceback.format_exc())
    finally:
        os.chdir(before)
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
    return results


@pytest.mark.parametrize("line", [line for line, _ in PYTHON], ids=lambda line: f"README.md:{line}")
def test_each_python_block_runs(line, python_results):
    result = python_results[line]
    if result is None:
        return
    kind, detail = result
    if kind == "skip":
        pytest.skip(detail)
    pytest.fail(f"the python block at README.md:{line} fails:\n{detail}", pytrace=False)


# bash blocks


def commands(line: int, body: str):
    """``(README line, words)`` of each command of a bash block (continuations joined, ``&&``
    chains split, comments dropped)."""
    start, logical = None, ""
    for offset, text in enumerate(body.splitlines()):
        start = line + 1 + offset if start is None else start
        if text.endswith("\\"):
            logical += text[:-1] + " "
            continue
        words = shlex.split(logical + text, comments=True)
        command = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    yield start, command
                command = []
            else:
                command.append(word)
        start, logical = None, ""


def fabula_complaint(words: list[str]) -> str | None:
    """Why ``fabula WORDS`` does not parse, or ``None``."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            fabula.cli.parser(words).parse_args(words)
    except SystemExit as e:
        if e.code == 0 and ("--help" in words or "-h" in words):
            return None
        return err.getvalue().strip() or f"the parser exited with {e.code}"
    except Exception as e:  # a story named by a path that cannot be loaded, say
        return f"{type(e).__name__}: {e}"
    return None


def declared_extras() -> set[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"].get("optional-dependencies", {}))


def pip_complaint(words: list[str]) -> str | None:
    """Why a ``pip install`` line names something that does not exist here, or ``None``."""
    for word in words[2:]:
        found = re.fullmatch(r"\.\[(.+)\]", word)
        if found:
            missing = set(found.group(1).split(",")) - declared_extras()
            if missing:
                return f"pyproject.toml declares no extra {sorted(missing)}"
    return None


def python_complaint(words: list[str]) -> str | None:
    if words[1] == "-m":
        if words[2] not in PYTHON_MODULES:
            return f"python -m {words[2]}: not a module the README may run ({', '.join(PYTHON_MODULES)})"
        return None
    script = Path(words[1])
    if script.parts[0] not in ("examples", "benchmarks") or script.suffix != ".py":
        return f"python {words[1]}: the README runs only scripts of examples/ and benchmarks/"
    if not (REPO / script).is_file():
        return f"python {words[1]}: no such file"
    return None


def export(assignment: str, monkeypatch) -> None:
    """``export NAME=VALUE`` for the commands after it; ``PYTHONPATH``'s folders, of the
    repository, are where the parser imports a story's module from."""
    name, _, value = assignment.partition("=")
    monkeypatch.setenv(name, value)
    if name == "PYTHONPATH":
        for folder in reversed(value.split(os.pathsep)):
            monkeypatch.syspath_prepend(str(REPO / folder))


def complaint(words: list[str], monkeypatch) -> str | None:
    """Why a command of a bash block fails the check, or ``None``."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # NAME=VALUE command
        words = words[1:]
    match words:
        case ["fabula", *rest]:
            return fabula_complaint(rest)
        case ["torchrun", *rest]:
            if "-m" not in rest or rest[rest.index("-m") + 1 :][:1] != ["fabula"]:
                return "torchrun runs the README's commands as -m fabula"
            return fabula_complaint(rest[rest.index("-m") + 2 :])
        case ["export", *assignments]:
            for assignment in assignments:
                export(assignment, monkeypatch)
            return None
        case ["pip", "install", *_]:
            return pip_complaint(words)
        case ["python", _, *_]:
            return python_complaint(words)
    return f"a line this test does not check: {shlex.join(words)!r}"


@pytest.fixture
def own_modules():
    """Forget the modules a story path imported from the repository's folders (``own_story``)."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        path = getattr(sys.modules[name], "__file__", None) or ""
        if path.startswith(str(REPO / "examples")):
            del sys.modules[name]


@pytest.mark.parametrize("index", range(len(BASH)), ids=[f"README.md:{line}" for line, _ in BASH])
def test_each_bash_command_parses(index, monkeypatch, own_modules):
    for line, body in BASH[:index]:  # an earlier block's exports hold here too
        for _, words in commands(line, body):
            if words[0] == "export":
                complaint(words, monkeypatch)
    fence, body = BASH[index]
    failures = [
        f"README.md:{line}: {shlex.join(words)}\n    {problem}"
        for line, words in commands(fence, body)
        if (problem := complaint(words, monkeypatch))
    ]
    assert not failures, f"the bash block at README.md:{fence}:\n" + "\n".join(failures)


def test_the_checks_catch_what_they_are_for(monkeypatch):
    """A wrong flag, a missing script, an unknown extra and an unknown line are each caught, on
    the line where their command starts."""
    body = (
        "fabula train nvdm --epoks 3 \\\n    --out runs/x   # a misspelt flag\n"
        "python benchmarks/no_such.py && fabula evaluate runs/x\n"
        'pip install -e ".[nothing]"\n'
        "make site\n"
    )
    found = [(line, complaint(words, monkeypatch)) for line, words in commands(10, body)]
    assert [line for line, _ in found] == [11, 13, 13, 14, 15]
    problems = [problem for _, problem in found]
    assert "unrecognized arguments: --epoks 3" in problems[0]
    assert "no such file" in problems[1] and problems[2] is None
    assert "no extra ['nothing']" in problems[3] and "does not check" in problems[4]
