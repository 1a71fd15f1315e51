"""`fabula compare` flags the rows a reader must not take at face value: a collapsed q and a fit
far from the generating model's NLL, each with its remedy."""

from fabula.cli import main
from fabula.run.compare import COLLAPSED_KL, flags, markdown, summarise


def row(nll, kl):
    return {
        "nll_elbo": nll + 1,
        "nll": nll,
        "kl": kl,
        "perplexity": None,
        "train_seconds": 1.0,
        "steps_per_second": 10.0,
        "train_loss": 5.0,
        "estimator": "iw:3",
        "refinement_rises": 0,
        "unfinished_warmup": None,
    }


def test_a_collapsed_or_unfitted_row_is_flagged_with_its_remedy():
    generator = {"nll": 60.0, "kl": 5.0, "estimator": "iw", "samples": 3}
    assert flags(row(61.0, 4.0), generator) == []
    collapsed = flags(row(61.0, COLLAPSED_KL / 2), generator)
    assert (
        len(collapsed) == 1
        and collapsed[0].startswith("collapsed (KL 0.05 < 0.1)")
        and "--anneal" in collapsed[0]
    )
    unfitted = flags(row(70.0, 4.0), generator)
    assert len(unfitted) == 1 and "not fitted (NLL 10.0 above the generating model's)" in unfitted[0]
    assert flags(row(70.0, None)) == []  # no q (an undirected story), no generating model: nothing to say
    rising = flags({**row(61.0, 4.0), "refinement_rises": 2}, generator)
    assert rising == [
        "refinement raised the ELBO on 2 test batches: lower --refinement-lr or the kind's lr option (svi:lr=0.05)"
    ]
    cells = {("vae", 0): row(61.0, 0.01), ("svi:2", 0): row(61.0, 3.0)}
    table = markdown(summarise(cells, ("vae", "svi:2"), [0]), generator).splitlines()
    assert table[0].endswith("| flags |") and "collapsed" in table[2] and "collapsed" not in table[3]
    assert all(line.count("|") == table[0].count("|") for line in table if line.startswith("|"))


def test_the_compare_command_prints_its_flags_column(capsys):
    argv = ["compare", "--inference", "vae", "--epochs", "1", "--train-size", "40", "--test-size", "8"]
    assert main([*argv, "--samples", "3", "--latent-dim", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert lines[0].endswith("| flags |") and lines[2].startswith("| vae |")
