"""`fabula compare` over seeds: each row's NLL difference to the first kind with its paired
standard error, the ordering it supports, a comparison stopped and resumed from its folder to the
same table, and the inference-only comparison against a held generating model."""

import json
import math

import pytest

import fabula.run.compare
from fabula.cli import main
from fabula.errors import RunError
from fabula.run.compare import COLLAPSED_KL, ordering, summarise
from fabula.run.compare_store import CompareStore

TINY = ["--epochs", "1", "--train-size", "30", "--test-size", "6", "--samples", "3", "--latent-dim", "2"]


def cell(nll: float, kl: float = 1.0) -> dict:
    return {
        "nll_elbo": nll + 1,
        "nll": nll,
        "kl": kl,
        "perplexity": None,
        "train_seconds": 2.0,
        "steps_per_second": 5.0,
        "train_loss": float("nan"),
        "estimator": "iw:3",
        "refinement_rises": 0,
        "unfinished_warmup": None,
    }


def test_each_row_gives_its_paired_difference_to_the_first_kind_and_its_standard_error():
    cells = {
        ("vae", 0): cell(70.0),
        ("vae", 1): cell(72.0),
        ("sa-vae:5", 0): cell(69.0),  # 1 below vae at seed 0
        ("sa-vae:5", 1): cell(69.0),  # 3 below at seed 1
        ("svi:5", 0): cell(71.0),
        ("svi:5", 1): cell(70.5),
    }
    rows = summarise(cells, ("vae", "sa-vae:5", "svi:5"), [0, 1])
    nll = {spec: rows[spec]["difference"]["nll"] for spec in rows}
    assert rows["vae"]["nll"] == 71.0 and nll["vae"] == {"mean": 0.0, "se": 0.0} and rows["vae"]["seeds"] == 2
    # differences -1 and -3: mean -2, sample sd sqrt(2), SE sqrt(2)/sqrt(2) = 1
    assert nll["sa-vae:5"]["mean"] == -2.0 and nll["sa-vae:5"]["se"] == pytest.approx(1.0)
    # +1 and -1.5: mean -0.25, SE |1 + 1.5| / 2 (paired: the seeds' spread of vae itself cancels)
    assert nll["svi:5"]["mean"] == -0.25 and nll["svi:5"]["se"] == pytest.approx(1.25)
    assert rows["svi:5"]["difference"]["nll_elbo"] == nll["svi:5"]  # each -ELBO is its NLL + 1 here
    assert rows["sa-vae:5"]["nll_per_seed"] == [69.0, 69.0] and math.isnan(rows["vae"]["train_loss"])
    assert ordering(rows).startswith("by mean NLL over 2 seeds: sa-vae:5 < svi:5 < vae")
    assert ordering(rows, "nll_elbo").startswith("by mean -ELBO over 2 seeds: sa-vae:5 < svi:5 < vae")
    # -2 is exactly 2 SE: not over it; -2.25 with SE 0.25 is 9 SE away
    assert "within 2 SE of vae: sa-vae:5, svi:5" in ordering(rows)
    cells["sa-vae:5", 1] = cell(69.5)
    cells["sa-vae:5", 0] = cell(68.0)  # differences -2 and -2.5
    assert "apart from vae by over 2 SE: sa-vae:5" in ordering(summarise(cells, ("vae", "sa-vae:5"), [0, 1]))
    single = summarise({("vae", 0): cell(70.0), ("svi:5", 0): cell(69.0)}, ("vae", "svi:5"), [0])
    assert single["svi:5"]["difference"]["nll"] == {"mean": -1.0, "se": None} and "one seed" in ordering(
        single
    )
    undirected = {
        ("cd:1", 0): {**cell(70.0), "nll_elbo": None},
        ("pcd:1", 0): {**cell(69.0), "nll_elbo": None},
    }
    assert summarise(undirected, ("cd:1", "pcd:1"), [0])["pcd:1"]["difference"]["nll_elbo"] is None


def table(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]


@pytest.mark.parametrize(
    "readme",
    [["--fixed-story"], ["--anneal", "linear:2"]],
    ids=["the first try (story fixed)", "the larger one (story learned)"],
)
def test_the_readme_comparisons_flag_every_row_that_collapsed(readme, capsys):
    """The README's two `compare` commands (their kinds at K = 3) at a reduced size: a row carries
    the collapse flag exactly where its KL is under the threshold, each flag with its remedy, and
    each row but the first its paired differences with their standard errors. Learning the story
    from 30 sentences collapses q somewhere, so the flag itself is exercised."""
    kinds = ["vae", "svi:3", "vae+svi:3", "sa-vae:3"]
    assert main(["compare", *readme, "--inference", *kinds, "--seeds", "2", *TINY]) == 0
    lines = table(capsys)
    header = lines[0].split(" | ")
    assert header[0] == "| inference" and "NLL − vae's" in header and "-ELBO − vae's" in header
    rows = [line.split(" | ") for line in lines[1:] if not line.startswith("| generating model")]
    assert [r[0].strip("| ") for r in rows] == kinds
    kl = [float(r[header.index("KL")]) for r in rows]
    if readme != ["--fixed-story"]:
        assert min(kl) < COLLAPSED_KL, "the reduced larger comparison collapses somewhere"
    for r, value in zip(rows, kl, strict=True):
        collapsed = value < COLLAPSED_KL
        assert ("collapsed" in r[-1]) == collapsed, r
        assert not collapsed or "--anneal linear:STEPS" in r[-1]
    for column in ("NLL − vae's", "-ELBO − vae's"):
        differences = [r[header.index(column)] for r in rows]
        assert differences[0] == "" and all("±" in d for d in differences[1:])


def test_a_stopped_comparison_resumes_from_its_folder_to_the_same_table(tmp_path, capsys, monkeypatch):
    argv = ["compare", "--inference", "vae", "svi:2", "--seeds", "2", *TINY, "--json"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads(capsys.readouterr().out)

    computed = []
    fit = fabula.run.compare.fit_and_evaluate

    def stopped_at_the_third(config, spec, seed, *args, **kwargs):
        if len(computed) == 2:
            raise KeyboardInterrupt
        computed.append((spec, seed))
        return fit(config, spec, seed, *args, **kwargs)

    monkeypatch.setattr(fabula.run.compare, "fit_and_evaluate", stopped_at_the_third)
    assert main([*argv, "--out", str(tmp_path / "stopped")]) == 130
    stopped = capsys.readouterr().err.strip()
    assert stopped.endswith(
        "2 finished cells are kept in "
        + str(tmp_path / "stopped" / "cells.json")
        + ": the same command resumes"
    )
    assert computed == [("vae", 0), ("vae", 1)]
    assert not (tmp_path / "stopped" / CompareStore.TABLE).exists()
    computed.clear()
    monkeypatch.setattr(
        fabula.run.compare, "fit_and_evaluate", lambda *a, **k: computed.append(a[1:3]) or fit(*a, **k)
    )
    assert main([*argv, "--out", str(tmp_path / "stopped")]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert computed == [("svi:2", 0), ("svi:2", 1)]  # only the cells the stop left
    for spec in ("vae", "svi:2"):
        for key in ("nll", "nll_elbo", "kl", "difference", "nll_per_seed"):
            assert resumed["rows"][spec][key] == whole["rows"][spec][key], (spec, key)
    assert resumed["generator"] == whole["generator"]
    assert (tmp_path / "stopped" / CompareStore.TABLE).read_text().startswith("| inference |")
    assert (tmp_path / "stopped" / CompareStore.PLOT).stat().st_size > 0

    computed.clear()  # a third seed and a kind more add only their cells
    assert (
        main([*argv[:4], "sa-vae:2", "--seeds", "3", *TINY, "--json", "--out", str(tmp_path / "stopped")])
        == 0
    )
    assert sorted(computed) == [("sa-vae:2", 0), ("sa-vae:2", 1), ("sa-vae:2", 2), ("svi:2", 2), ("vae", 2)]


def test_a_comparison_folder_with_other_settings_or_damaged_cells_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--inference", "vae", "--seeds", "1", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert (
        main(["compare", "--inference", "vae", "--seeds", "1", *TINY, "--lr", "0.01", "--out", str(out)]) == 2
    )
    message = capsys.readouterr().err.strip()
    assert "config.optimizer.lr differ" in message and len(message.splitlines()) == 1

    saved = json.loads((out / CompareStore.CELLS).read_text())
    saved["cells"][0]["row"]["nll"] = "NaN"
    (out / CompareStore.CELLS).write_text(json.dumps(saved))
    with pytest.raises(RunError, match="cell 0 has no number for nll"):
        CompareStore(out, saved["settings"])
    (out / CompareStore.CELLS).write_bytes(b"\xff\xfe not json")
    with pytest.raises(RunError, match="not a comparison's cells"):
        CompareStore(out, saved["settings"])


def test_an_inference_only_comparison_holds_the_generating_model_or_is_refused(capsys, tmp_path):
    argv = ["compare", "--fixed-story", "--inference", "vae", "svi:3", "--seeds", "2", *TINY]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "the inference only (story fixed at the generating model)" in out
    svi = next(line for line in out.splitlines() if line.startswith("| svi:3 |"))
    header = next(line for line in out.splitlines() if line.startswith("| inference"))
    assert svi.split(" | ")[header.split(" | ").index("train s")] == "0.0"  # SVI trains nothing here
    assert main(["compare", "--fixed-story", "--story", "gmvae", *TINY[:2]]) == 2
    assert "generating model is a LSTMVAE, not the gmvae story's GMVAE" in capsys.readouterr().err
    assert main([*argv[:2], "--latent-dim", "3", "--epochs", "1"]) == 2
    assert "--latent-dim 3 differs" in capsys.readouterr().err
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("a b c\nb c d\n" * 5)
    (corpus / "test.txt").write_text("a b\n")
    assert main([*argv[:2], "--data", str(corpus), "--epochs", "1"]) == 2
    assert "has none (only the embedded synthetic corpora do)" in capsys.readouterr().err
