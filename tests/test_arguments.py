"""Every numeric option of every command, at 0, -1, inf and nan, gives a working run or exit 2
with one line naming the option -- never a traceback. The options are found by walking the
``fabula`` parsers, so a new option is in the table without being listed here; a new command or
story needs its tiny base command in :func:`base_command`."""

import argparse
import re

import pytest
import torch

from fabula.cli import main, parser
from fabula.inference.annealing import Logistic, parse_schedule

VALUES = ("0", "-1", "inf", "nan")

TINY_TRAIN = ["--epochs", "1", "--batch-size", "256", "--quiet", "--no-reference"]
TINY_STORY = {
    "nvdm": ["--latent-dim", "2", "--hidden", "8"],
    "rnnlm": ["--embed-dim", "8", "--hidden-dim", "8"],
    "lstm-vae": ["--latent-dim", "2", "--embed-dim", "8", "--hidden-dim", "8"],
    "gmvae": ["--num-components", "2", "--latent-dim", "2", "--embed-dim", "8", "--hidden-dim", "8"],
    "rsm": ["--hidden", "2"],
    "sbn": ["--latent-dim", "2", "--hidden", "8"],
    "fdarn": ["--latent-dim", "2", "--hidden", "8"],
    "lda": ["--num-topics", "2", "--hidden", "8"],
    "gsm": ["--num-topics", "2", "--latent-dim", "2", "--embed-dim", "4", "--hidden", "8"],
    "docnade": ["--hidden", "4"],
}


def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(path, parser)`` of every leaf command: ``("train", "nvdm")``, ``("evaluate",)``, ..."""
    groups = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, p
        return
    for name, sub in groups[0].choices.items():
        yield from commands(sub, (*path, name))


def numeric_options() -> list[tuple[tuple[str, ...], str]]:
    """``(command path, option)`` of every flag that reads an int or a float."""
    return [
        (path, action.option_strings[-1])
        for path, p in commands(parser())
        for action in p._actions
        if action.option_strings and getattr(action.type, "__name__", None) in ("int", "float")
    ]


pytestmark = pytest.mark.usefixtures("one_sentence_corpus")


def key(args: argparse.Namespace) -> str:
    """The parsed arguments, the output folder aside: commands with equal keys do the same."""
    return repr(sorted((k, v) for k, v in vars(args).items() if k != "out"))


@pytest.fixture(scope="module")
def outcomes():
    """Exit codes of the commands run so far, by :func:`key`, so that a value which leaves a
    command as it was reuses its run."""
    return {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, outcomes):
    """Tiny nvdm, lstm-vae and rnnlm runs for the commands that read a run: the base train commands."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for story in ("nvdm", "lstm-vae", "rnnlm"):
        out[story] = str(root / story)
        argv = base_command(("train", story), {}, out[story])
        trained = key(parser().parse_args(argv))
        outcomes[trained] = main(argv)
        assert outcomes[trained] == 0
    return out


def base_command(path: tuple[str, ...], runs: dict, out: str) -> list[str]:
    """A tiny working command for ``path``, writing (where it writes) to ``out``."""
    if path[0] == "train":
        return ["train", path[1], "--out", out, *TINY_TRAIN, *TINY_STORY[path[1]]]
    nvdm, vae = runs["nvdm"], runs["lstm-vae"]
    decoding = ["--max-length", "5", "--decode", "beam"]
    return {
        "evaluate": ["evaluate", nvdm, "--json", "--gaps", "--gap-steps", "2"],
        "topics": ["topics", nvdm, "--k", "3"],
        "sample": ["sample", vae, "--n", "2", *decoding],
        "interpolate": ["interpolate", vae, "w0704 w0312", "w0288", "--steps", "3", *decoding],
        "compare": [
            *("compare", "--story", "nvdm", "--inference", "vae", "--epochs", "1", "--json"),
            *("--latent-dim", "2", "--hidden-dim", "8", "--samples", "2", "--train-size", "64"),
            *("--test-size", "16"),
        ],
        "cgmh": [
            *("cgmh", runs["rnnlm"], "--keywords", "w0704", "--chains", "2", "--steps", "3"),
            *("--burn-in", "1", "--candidates", "5", "--max-length", "6"),
        ],
        "diagnose": [
            *("diagnose", nvdm, "--inference", "nuts", "--items", "0:2", "--out", out),
            *("--samples", "5", "--warmup", "5", "--chains", "2"),
        ],
    }[path[0]]


def test_every_command_has_a_base_command_that_parses(runs, tmp_path):
    for path, _ in commands(parser()):
        assert parser().parse_args(base_command(path, runs, str(tmp_path))).func, path


@pytest.mark.parametrize(
    "path, option", numeric_options(), ids=lambda x: "-".join(x) if isinstance(x, tuple) else x
)
def test_numeric_options_run_or_are_refused_in_one_line(path, option, runs, outcomes, tmp_path, capsys):
    for i, value in enumerate(VALUES):
        argv = [*base_command(path, runs, str(tmp_path / str(i))), option, value]
        try:
            args = parser().parse_args(argv)
        except SystemExit as refused:  # argparse: usage, then one line naming the option
            assert refused.code == 2, (argv, refused.code)
            assert f"argument {option}" in capsys.readouterr().err.strip().splitlines()[-1], argv
            continue
        capsys.readouterr()
        if key(args) not in outcomes:  # refused by the settings it builds, or run for real
            outcomes[key(args)] = main(argv)
            printed = capsys.readouterr().err.strip().splitlines()
            if outcomes[key(args)] == 2:
                assert len(printed) == 1 and option in printed[0], (argv, printed)
        assert outcomes[key(args)] in (0, 2), (argv, outcomes[key(args)])


@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", "lstm-vae", "--anneal", "linear:0"], "--anneal"),
        (["train", "lstm-vae", "--anneal", "cyclical:0"], "--anneal"),
        (["train", "lstm-vae", "--anneal", "linear:inf"], "--anneal"),
        (["train", "lstm-vae", "--anneal", "linear:10:2"], "--anneal"),
        (
            ["train", "lstm-vae", "--inference", "sa-vae:0"],
            "steps (refinement steps K) must be an integer >= 1",
        ),
        (["train", "rnnlm", "--free-bits", "0.5"], "--free-bits"),
        (["compare", "--inference"], "--inference"),
        (["diagnose", "RUN", "--items", "5:2", "--out", "x"], "argument --items"),
        (["diagnose", "RUN", "--items", "-1:3", "--out", "x"], "argument --items"),
        (["diagnose", "RUN", "--items", "a:b", "--out", "x"], "argument --items"),
        (["sample", "RUN", "--component", "x"], "argument --component"),
        (["sample", "RUN", "--component", "0:-1"], "argument --component"),
    ],
)
def test_structured_values_are_refused_in_one_line(argv, option, tmp_path, capsys):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    try:
        code = main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "train" else argv)
    except SystemExit as refused:
        code = refused.code
    assert code == 2
    assert option in capsys.readouterr().err.strip().splitlines()[-1]


def test_logistic_annealing_far_from_its_midpoint_does_not_overflow():
    schedule = parse_schedule("logistic:1:1e6")
    assert schedule == Logistic(1.0, 1e6)
    assert schedule(0) == 0.0 and schedule(10**7) == 1.0 and schedule(10**6) == 0.5


def test_out_of_range_choices_of_a_run_are_refused(runs, capsys):
    assert main(["topics", runs["nvdm"], "--k", "100000"]) == 2
    assert "--k 100000 exceeds the vocabulary" in capsys.readouterr().err
    assert main(["diagnose", runs["nvdm"], "--items", "100000:", "--out", "x"]) == 2
    assert "--items selects none" in capsys.readouterr().err


def test_nvdm_samples_documents_from_its_prior(runs, capsys):
    argv = ["sample", runs["nvdm"], "--n", "3", "--max-length", "4", "--seed", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        length, words = re.fullmatch(r"(\d+) words: (.*)", line).groups()
        counts = [int(w.rsplit(":", 1)[1]) for w in words.split()]
        assert 1 <= len(counts) <= 4 and counts == sorted(counts, reverse=True)
        assert sum(counts) <= int(length)
    assert main(argv) == 0 and capsys.readouterr().out.strip().splitlines() == lines  # seeded
    assert main(["sample", runs["nvdm"], "--from", "w0001"]) == 2
    assert "samples documents from its prior" in capsys.readouterr().err


def test_sample_documents_draws_the_given_lengths(runs):
    from fabula.generation import sample_documents
    from fabula.run import load_run

    story = load_run(runs["nvdm"]).inference.story
    torch.manual_seed(0)
    lengths = torch.tensor([5.0, 40.0])
    documents = sample_documents(story, lengths, max_words=story.vocab_size)
    assert [sum(c for _, c in d) for d in documents] == [5, 40]


def test_a_subset_of_a_settings_class_takes_flags_and_the_rest_keep_their_defaults():
    from fabula.cgmh import CGMHSettings
    from fabula.errors import SettingsError
    from fabula.run.flags import add_arguments, from_arguments

    p = argparse.ArgumentParser()
    add_arguments(p, CGMHSettings, "cgmh", {"steps": 20}, only=("steps", "burn_in"))
    settings = from_arguments(CGMHSettings, p.parse_args(["--burn-in", "5"]), "cgmh")
    assert (settings.steps, settings.burn_in, settings.chains) == (20, 5, CGMHSettings().chains)
    with pytest.raises(SystemExit):  # a field outside the subset has no flag
        p.parse_args(["--chains", "3"])
    with pytest.raises(SettingsError, match="leaves no draw"):  # the class still checks its values
        from_arguments(CGMHSettings, p.parse_args(["--burn-in", "20"]), "cgmh")
    with pytest.raises(SettingsError, match="no CGMHSettings settings \\['step'\\]"):
        add_arguments(argparse.ArgumentParser(), CGMHSettings, "cgmh", only=("step",))
