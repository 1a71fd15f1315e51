"""The examples (``>>>``) in the docstrings of every module of the ``fabula`` package, run as
doctests: one case per module that has examples, failing with doctest's report.

Every module is imported, walking the package with :mod:`pkgutil`; ``fabula.__main__`` is left
out, as it runs the command when imported. A module that cannot be imported because a package it
needs is not installed is skipped, and the skip names the package; any other import error fails.
Each module's examples run in a temporary working directory, and the random states of torch,
NumPy and Python's ``random`` are restored afterwards, so that seeding in an example changes no
other test.
"""

import doctest
import importlib
import io
import pkgutil
import random

import numpy as np
import pytest
import torch

import fabula

NOT_IMPORTED = {"fabula.__main__": "runs the fabula command when imported"}


def module_names() -> list[str]:
    """``fabula`` and every module and package under it."""
    found = pkgutil.walk_packages(fabula.__path__, "fabula.", onerror=lambda name: None)
    return ["fabula", *sorted(m.name for m in found if m.name not in NOT_IMPORTED)]


def examples(module) -> list[doctest.DocTest]:
    """The doctests of the objects ``module`` defines (not those it imports), in a stable order."""
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    return sorted((t for t in tests if t.examples), key=lambda t: t.name)


def _cases() -> list:
    """One case per module with examples; a module that cannot be imported is a case too, skipped
    where a package it needs is missing, else failing on import."""
    cases = []
    for name in module_names():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.partition(".")[0] != "fabula":
                reason = f"{name} needs {e.name}, which is not installed"
                cases.append(pytest.param(name, marks=pytest.mark.skip(reason=reason), id=name))
            else:
                cases.append(pytest.param(name, id=name))
            continue
        except Exception:
            cases.append(pytest.param(name, id=name))  # the case fails with the import's error
            continue
        if examples(module):
            cases.append(pytest.param(name, id=name))
    return cases


CASES = _cases()


class RandomStates:
    """Restores the random states of torch, NumPy and Python's ``random`` on exit."""

    def __enter__(self):
        self.states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self.states[0])
        np.random.set_state(self.states[1])
        random.setstate(self.states[2])


@pytest.mark.parametrize("name", CASES)
def test_the_examples_of_each_module_run_as_written(name, tmp_path, monkeypatch):
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)
    report = io.StringIO()
    runner = doctest.DocTestRunner(verbose=False)
    with RandomStates():
        for test in examples(module):
            runner.run(test, out=report.write)
    assert runner.failures == 0, (
        f"{runner.failures} of {runner.tries} examples failed in {name}:\n{report.getvalue()}"
    )


# The main public objects, each with an example in its docstring (each run above).
SHOWN = [
    "fabula.data.bow:BagOfWords.from_dense",
    "fabula.data.corpus:Corpus.subset",
    "fabula.data.text:TextCorpus",
    "fabula.data.user:read_corpus",
    "fabula.evaluation.estimators:parse_estimator",
    "fabula.evaluation.report:evaluate",
    "fabula.inference.annealing:Linear",
    "fabula.inference.annealing:parse_schedule",
    "fabula.inference.kinds:build",
    "fabula.inference.kinds:parse",
    "fabula.inference.presets:Amortized",
    "fabula.inference.refinement:Refinement",
    "fabula.inference.spec:split",
    "fabula.models.linear_gaussian:LinearGaussian",
    "fabula.nn.output:output_layer",
    "fabula.run.config:TrainConfig.create",
    "fabula.run.loop:train",
    "fabula.settings:setting",
]


def test_the_main_public_objects_show_their_use():
    lacking = []
    for path in SHOWN:
        module, _, attribute = path.partition(":")
        obj = importlib.import_module(module)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        if ">>>" not in (obj.__doc__ or ""):
            lacking.append(path)
    assert not lacking, f"no example in the docstring of {lacking}"
