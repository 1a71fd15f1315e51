import json

import pytest

from fabula.cli import main, parser


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["topics"]])
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

    assert main(["evaluate", run, "--estimator", "iw", "--samples", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"perplexity", "corpus_perplexity", "nll", "kl", "active_units", "estimator", "samples"} <= set(
        report
    )
    assert (report["estimator"], report["samples"]) == ("iw", 20)
    # the generating model, bounded by the same estimator, is reported beside the fit
    assert report["generator"]["estimator"] == "iw" and report["generator"]["nll"] < report["nll"]

    assert main(["evaluate", run]) == 0
    table = capsys.readouterr().out
    assert "| trained |" in table and "| generating model |" in table and "estimator elbo (S=1)" in table

    assert main(["topics", run, "--k", "3"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["z[0]", "z[1]", "z[2]", "z[3]"]
    assert all(len(r.split("\t")[1].split()) == 3 for r in rows)


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "nvdm", "--out", str(tmp_path / "r"), "--anneal", "wiggly:1", "--epochs", "1"]) == 2
    assert "unknown annealing schedule" in capsys.readouterr().err


def test_parser_defaults_match_the_documented_embedded_run():
    args = parser().parse_args(["train", "nvdm"])
    assert (args.data, args.out, args.latent_dim) == ("synthetic", "runs/demo", 50)
