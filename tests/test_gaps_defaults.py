"""The default step size of ``fabula evaluate --gaps`` converges; a diverging one is refused."""

import json
import warnings

import pytest

from fabula.cli import main, parser
from fabula.evaluation.gaps import NotConverged, inference_gaps
from fabula.inference import Refinement, RefinementWarning, refined
from fabula.run import load_run

# two epochs of the embedded default NVDM: its step 0.5 (the old default) overshoots by nats
TRAIN = ["--epochs", "2", "--quiet", "--no-reference"]
GAPS = ["--gaps", "--estimator", "elbo", "--gap-samples", "10"]


@pytest.fixture(scope="module")
def nvdm(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("gaps") / "nvdm")
    assert main(["train", "nvdm", "--out", run, *TRAIN]) == 0
    return run


def test_the_default_step_size_converges_on_a_trained_nvdm(nvdm, capsys):
    assert parser().parse_args(["evaluate", nvdm]).gap_lr == 0.005
    capsys.readouterr()
    assert main(["evaluate", nvdm, *GAPS, "--json"]) == 0
    out, err = capsys.readouterr()
    gaps = json.loads(out)["gaps"]
    assert gaps["amortization_gap"] > 3 * gaps["amortization_gap_se"] > 0
    assert gaps["approximation_gap"] > 0 and gaps["raised_batches"] == 0
    assert "warning" not in err


def test_a_diverging_step_size_is_refused_in_one_line_naming_the_flag(nvdm, capsys):
    capsys.readouterr()
    assert main(["evaluate", nvdm, *GAPS, "--gap-lr", "0.5", "--json"]) == 2  # --json: no progress bars
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "RefinementWarning" not in err and out == ""
    assert lines[0].startswith(
        "fabula evaluate: error: refinement did not converge: lower --gap-lr (now 0.5)"
    )
    # a step that leaves q's support is refused in the same terms
    assert main(["evaluate", nvdm, *GAPS, "--gap-lr", "50", "--json"]) == 2
    assert "refinement did not converge: lower --gap-lr (now 50.0)" in capsys.readouterr().err


def test_from_python_a_negative_gap_raises_naming_the_refinement_step(nvdm):
    run = load_run(nvdm)
    data = run.splits["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RefinementWarning)  # the batches' warnings are folded in
        with pytest.raises(NotConverged, match=r"lower Refinement\(lr=\.\.\.\) \(now 0\.5\)") as refused:
            inference_gaps(
                run.inference, refined(run.inference, Refinement(lr=0.5)), data, 10, batch_size=200
            )
    assert refused.value.gap < -3 * refused.value.se and refused.value.lr == 0.5
