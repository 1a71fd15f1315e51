import json
import math

import pytest

from fabula.cli import _train_config, main, parser


@pytest.mark.parametrize(
    "command",
    [[], ["train"], ["train", "nvdm"], ["train", "lstm-vae"], ["evaluate"], ["topics"], ["compare"]]
    + [["cgmh"]],
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "example" in capsys.readouterr().out


def test_train_evaluate_topics_on_the_embedded_default(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["train", "nvdm", "--out", run, "--epochs", "2", "--latent-dim", "4", "--hidden", "16", "--quiet"]
    assert main(args) == 0
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    capsys.readouterr()

    assert main(["evaluate", run, "--estimator", "iw:20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"perplexity", "corpus_perplexity", "nll", "kl", "active_units", "estimator", "samples"} <= set(
        report
    )
    assert (report["estimator"], report["samples"]) == ("iw", 20)
    # the generating model, bounded by the same estimator, is reported beside the fit
    assert report["generator"]["estimator"] == "iw" and report["generator"]["nll"] < report["nll"]

    assert main(["evaluate", run]) == 0
    table = capsys.readouterr().out
    assert (
        "| trained |" in table
        and "| generating model |" in table
        and "estimator elbo:1" in table
        and "| mi |" in table
    )

    assert main(["evaluate", run, "--gap-samples", "10", "--gaps", "--gap-steps", "5", "--json"]) == 0
    gaps = json.loads(capsys.readouterr().out)["gaps"]
    total = gaps["log_likelihood"] - gaps["elbo_amortized"]
    assert gaps["approximation_gap"] + gaps["amortization_gap"] == pytest.approx(total)

    assert main(["topics", run, "--k", "3"]) == 0
    *rows, summary = capsys.readouterr().out.strip().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["z[0]", "z[1]", "z[2]", "z[3]"]
    assert summary.startswith("mean NPMI") and "topic diversity" in summary
    assert all(len(r.split("\t")[1].split()) == 3 for r in rows)


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "nvdm", "--out", str(tmp_path / "r"), "--anneal", "wiggly:1", "--epochs", "1"]) == 2
    assert "unknown annealing schedule" in capsys.readouterr().err


def test_parser_defaults_match_the_documented_embedded_run():
    args = parser().parse_args(["train", "nvdm"])
    config = _train_config(args)
    assert (config.data.data, args.out, config.model.latent_dim, config.inference.inference) == (
        "synthetic",
        "runs/demo",
        50,
        "vae",
    )


@pytest.mark.thorough
@pytest.mark.parametrize("story", ["rnnlm", "lstm-vae"])
def test_sentence_stories_train_evaluate_and_generate(story, tmp_path, capsys):
    run = str(tmp_path / story)
    tiny = ["--embed-dim", "8", "--hidden-dim", "12", "--batch-size", "128", "--quiet"]
    extra = ["--latent-dim", "3", "--word-dropout", "0.2", "--anneal", "linear:50", "--inference", "sa-vae:1"]
    extra = extra if story == "lstm-vae" else []
    assert main(["train", story, "--out", run, "--epochs", "1", *tiny, *extra]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--estimator", "iw:4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["num_tokens"] > report["num_data"] and "mi" in report and report["generator"]["samples"] == 4
    )
    assert report["inference"] == ("sa-vae:1" if story == "lstm-vae" else "vae")  # loaded as trained
    assert main(["sample", run, "--n", "3", "--decode", "beam", "--max-length", "6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(line.split()) <= 6 for line in lines)
    if story == "lstm-vae":
        assert main(["sample", run, "--n", "2", "--from", "w0704 w0312 zebra"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "input:  w0704 w0312 <unk>" and len(out) == 3
        assert main(["interpolate", run, "w0704 w0312", "w0288 w0580", "--steps", "4"]) == 0
        steps = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
        assert steps == ["0.00", "0.33", "0.67", "1.00"]
    else:
        assert main(["interpolate", run, "w0704", "w0288"]) == 2
        assert "latent code" in capsys.readouterr().err


def test_stories_refuse_data_of_the_other_kind(tmp_path, capsys):
    assert main(["train", "rnnlm", "--data", "20news", "--out", str(tmp_path / "r")]) == 2
    assert "the rnnlm story reads sentences; '20news' holds documents" in capsys.readouterr().err


def test_compare_fits_one_story_with_several_inference_objects(capsys):
    args = ["compare", "--epochs", "1", "--hidden-dim", "16", "--samples", "3", "--json"]
    assert main([*args, "--inference", "vae", "svi:1", "vae+svi:1", "sa-vae:1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["rows"]) == ["vae", "svi:1", "vae+svi:1", "sa-vae:1"]
    assert all(r["estimator"] == "iw:3" and r["steps_per_second"] > 0 for r in out["rows"].values())
    assert out["generator"]["nll"] < min(r["nll"] for r in out["rows"].values())
    assert main(["compare", "--inference", "vae:3"]) == 2
    assert "inference 'vae' takes no bare value" in capsys.readouterr().err
    assert main(["compare", "--inference", "nuts"]) == 2
    assert "does not train" in capsys.readouterr().err


def test_compare_scores_an_undirected_story_by_ais(capsys):
    args = ["compare", "--story", "rsm", "--latent-dim", "5", "--epochs", "1", "--train-size", "100"]
    args += ["--test-size", "20", "--json"]
    assert main([*args, "--inference", "cd:1", "pcd:2"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert list(rows) == ["cd:1", "pcd:2"]
    for r in rows.values():  # no bound and no KL: the RSM has no guide
        assert r["estimator"] == "ais:100:100" and r["nll_elbo"] is None and r["kl"] is None
        assert math.isfinite(r["nll"]) and r["perplexity"] > 1 and r["steps_per_second"] > 0
    assert main(args) == 2  # the default kinds are variational
    assert "train it with cd:K or pcd:K, not 'vae'" in capsys.readouterr().err


def test_compare_anneals_every_inference_objects_kl(capsys):
    args = ["compare", "--epochs", "1", "--hidden-dim", "16", "--samples", "3", "--json"]
    args += ["--inference", "vae"]
    losses = []
    for anneal in ([], ["--anneal", "linear:1000000"]):  # beta stays near 0: the KL barely counts
        assert main([*args, *anneal]) == 0
        losses.append(json.loads(capsys.readouterr().out)["rows"]["vae"]["train_loss"])
    assert losses[1] < losses[0]
    assert main([*args, "--anneal", "sideways:3"]) == 2
    assert "unknown annealing schedule 'sideways'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "inference, extra",
    [
        ("nuts", []),
        ("nuts", ["--backend", "numpyro"]),
        ("sa-vae:3", []),
        ("refine:3", []),
        ("vae", ["--against-nuts", "--backend", "numpyro"]),
    ],
)
def test_diagnose_writes_netcdf_plots_and_a_summary(inference, extra, tmp_path, capsys):
    run = str(tmp_path / "run")
    tiny = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--quiet"]
    assert main(["train", "nvdm", "--out", run, *tiny]) == 0
    out = tmp_path / "diag"
    args = ["diagnose", run, "--inference", inference, "--items", "0:2", "--out", str(out), *extra]
    assert main([*args, "--samples", "40", "--warmup", "40", "--chains", "2"]) == 0
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "ess_bulk" in printed
    assert ("PSIS k-hat" in printed) == (inference != "nuts")
    assert (out / "posterior.nc").stat().st_size > 0
    assert (out / "trace.png").exists() and (out / "pair.png").exists()
    assert (out / "energy.png").exists() == (inference == "nuts")
    against = "--against-nuts" in extra
    assert (out / "q_vs_reference.png").exists() == (out / "nuts.nc").exists() == against
    assert ("error of q against NUTS" in printed) == against
    if against:  # one line per site and item: mean error, |log variance ratio|, KL, all >= 0
        rows = [line.split() for line in printed.splitlines() if line.startswith("  z item")]
        assert len(rows) == 2 and all(float(v) >= 0 for row in rows for v in row[3:])


@pytest.mark.thorough
def test_gmvae_trains_with_mixture_diagnostics_and_samples_per_component(tmp_path, capsys):
    run = tmp_path / "dgmvae"
    tiny = ["--embed-dim", "8", "--hidden-dim", "12", "--latent-dim", "2", "--batch-size", "128", "--quiet"]
    mixture = [
        "--num-components",
        "3",
        "--num-pairs",
        "2",
        "--dispersion",
        "0.5",
        "--mutual-information",
        "1",
    ]
    assert main(["train", "gmvae", "--out", str(run), "--epochs", "2", *tiny, *mixture]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("eval_kl_c", "eval_kl_z", "eval_vm", "eval_dispersion", "eval_mi_c"):
        assert all(m[key] >= 0 for m in history)
    assert len(history[-1]["eval_usage"]) == 2 and len(history[-1]["component_means"][0]) == 3
    assert (run / "components.png").stat().st_size > 0
    capsys.readouterr()
    # evaluation reports the mixture diagnostics that training logged, on the same split
    assert main(["evaluate", str(run), "--split", history[-1]["eval_split"], "--json"]) == 0
    mixture = json.loads(capsys.readouterr().out)["mixture"]
    assert mixture["kl_c"] == pytest.approx(history[-1]["eval_kl_c"], rel=1e-5)
    assert main(["evaluate", str(run)]) == 0
    assert "mixture: KL(c)" in capsys.readouterr().out
    assert main(["sample", str(run), "--n", "2", "--component", "1:2", "--max-length", "5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["sample", str(run), "--n", "2", "--from", "w0704 w0312", "--max-length", "5"]) == 0
    with pytest.raises(SystemExit) as exit_:  # a setting of another story is not a flag of this one
        main(["train", "lstm-vae", "--dispersion", "0.5", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "--dispersion" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the library's user-facing errors become exit 2; any other exception propagates."""

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("fabula.cli.train", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["train", "nvdm", "--out", str(tmp_path / "r")])


def test_story_help_says_its_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "lstm-vae", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: linear:8000)" in text and "(default: 0.2)" in text and "(default: 32)" in text


def test_a_new_inference_kind_is_one_module_and_one_registry_entry(tmp_path, capsys):
    import toy_inference

    run = str(tmp_path / "run")
    tiny = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--quiet", "--no-reference"]
    assert main(["train", "nvdm", "--inference", "toy", "--out", run, *tiny]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inference"] == "toy"
    from fabula.run import load_run

    assert isinstance(load_run(run).inference, toy_inference.ToyVI)
    args = ["compare", "--story", "nvdm", "--epochs", "1", "--hidden-dim", "8", "--samples", "2", "--json"]
    assert main([*args, "--train-size", "64", "--test-size", "16", "--inference", "toy", "vae"]) == 0
    assert list(json.loads(capsys.readouterr().out)["rows"]) == ["toy", "vae"]
    out = tmp_path / "diag"
    assert (
        main(["diagnose", run, "--inference", "toy", "--items", "0:2", "--samples", "20", "--out", str(out)])
        == 0
    )
    assert "PSIS k-hat" in capsys.readouterr().out


def test_none_unsets_an_optional_setting_of_the_recipe(capsys):
    config = _train_config(
        parser().parse_args(["train", "lstm-vae", "--free-bits", "none", "--anneal", "none"])
    )
    assert (config.inference.free_bits, config.inference.anneal) == (None, None)
    assert _train_config(parser().parse_args(["train", "lstm-vae"])).inference.free_bits == 0.2
    with pytest.raises(SystemExit):
        parser().parse_args(["train", "lstm-vae", "--free-bits", "lots"])
    assert "invalid float value: 'lots'" in capsys.readouterr().err
