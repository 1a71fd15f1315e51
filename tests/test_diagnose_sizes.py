"""`fabula diagnose` at NVDM's default latent size: plots of a named subset, compact summaries."""

import csv

import numpy as np
import pytest

from fabula.cli import main
from fabula.diagnostics import compact_summary, plot_diagnostics, plotted_coordinates
from fabula.diagnostics.arviz import az


def _draws(chains, dims, shift=0.0, seed=0):
    """``az.InferenceData`` of standard normal draws ``z [chain, 30, data=3, dims]``; ``shift`` moves
    chain 0 of ``z[1, 7]`` (an unmixed coordinate)."""
    z = np.random.default_rng(seed).normal(size=(chains, 30, 3, dims))
    z[0, :, 1, 7] += shift
    return az.from_dict(posterior={"z": z}, coords={"data": [4, 5, 6]}, dims={"z": ["data", "z_dim_0"]})


def test_diagnose_against_nuts_at_the_default_latent_size(tmp_path, capsys):
    run, out = str(tmp_path / "run"), tmp_path / "diag"
    assert (
        main(
            ["train", "nvdm", "--out", run, "--latent-dim", "50", "--epochs", "1", "--hidden", "8", "--quiet"]
        )
        == 0
    )
    capsys.readouterr()
    argv = ["diagnose", run, "--inference", "refine:3", "--against-nuts", "--backend", "numpyro"]
    argv += ["--items", "0:2", "--samples", "40", "--warmup", "40", "--chains", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert len(lines) < 20  # compact: no row per coordinate (2 items x 50)
    rows = [line.split() for line in lines if line.startswith("  z item")]  # q's error per datum
    assert [row[2] for row in rows] == ["0:", "1:"] and all(float(v) >= 0 for row in rows for v in row[3:])
    assert (
        "PSIS k-hat of q per datum" in printed
        and "below 0.5 good, 0.5-0.7 ok, above 0.7 unreliable" in printed
    )
    reference = lines[lines.index(next(line for line in lines if line.startswith("NUTS reference"))) :]
    assert any(line.startswith("  r_hat    worst") and "at z[" in line for line in reference)
    assert "ess_bulk lowest" in printed and "ess_tail lowest" in printed
    assert "plots show z[0:8] of item 0" in printed
    for name in ("trace", "rank", "pair", "q_vs_reference"):
        assert (out / f"{name}.png").stat().st_size > 0
    for table in ("summary.csv", "nuts_summary.csv"):
        with open(out / table) as f:
            assert len(list(csv.DictReader(f))) == 2 * 50
        assert f"full table: {out / table}" in printed


@pytest.mark.parametrize("max_subplots, shown", [(40, "z[0:8]"), (10, "z[0:5]"), (3, "z[0:1]")])
def test_every_figure_fits_the_subplot_limit(max_subplots, shown, tmp_path):
    # pytest turns ArviZ's warning of a figure cut to plot.max_subplots into an error
    idata, reference = _draws(1, 50), _draws(2, 50, seed=1)
    with az.rc_context({"plot.max_subplots": max_subplots}):
        assert plotted_coordinates(idata.posterior)[2] == f"{shown} of item 4"
        written = plot_diagnostics(idata, tmp_path, reference)
    assert "q_vs_reference.png" in written and ("pair.png" in written) == (shown != "z[0:1]")


def test_the_subset_is_shared_among_sites():
    idata = _draws(2, 50)
    idata.posterior["h"] = (idata.posterior["z"] > 0).astype(int).rename(z_dim_0="h_dim_0")
    sites, coords, label = plotted_coordinates(idata.posterior)
    assert sites == ["z", "h"] and label == "z[0:4], h[0:4] of item 4"
    assert list(coords["data"]) == [4] and list(coords["h_dim_0"]) == [0, 1, 2, 3]


def test_compact_summary_names_the_worst_coordinate_and_writes_the_table(tmp_path):
    lines = compact_summary(_draws(2, 50, shift=5.0), ["z"], tmp_path / "summary.csv")
    assert len(lines) == 4 and "150 coordinates, 2 chain(s) x 30 draws" in lines[0]
    assert lines[1].startswith("  r_hat    worst") and "at z[5, 7]" in lines[1]
    assert (tmp_path / "summary.csv").read_text().count("\n") == 1 + 150
    one_chain = compact_summary(_draws(1, 50), ["z"], tmp_path / "q.csv")
    assert "needs two chains" in one_chain[1]
