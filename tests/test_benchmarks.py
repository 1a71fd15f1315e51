"""Every benchmark runs end to end under ``--smoke`` (tiny sizes and tiny stand-ins for the
corpora, see ``benchmarks/results_log.py``) and writes nothing to benchmarks/; a benchmark
missing here fails the coverage test."""

import hashlib
import importlib.util
import math
import tempfile
from pathlib import Path

import pytest
import torch

from fabula.data.registry import DATASETS

pytestmark = pytest.mark.thorough  # each benchmark run end to end at its smoke sizes

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HELPERS = {"results_log.py"}  # imported by the benchmarks, not one of them
# the arguments beside --smoke of each run (a second where a script has another branch of its own)
SMOKE_ARGS = {
    "adversarial.py": [["--part", "oracle"], ["--part", "ptb"], ["--part", "speed"]],
    "cgmh_ptb.py": [[]],
    "cgmh_quora.py": [[]],
    "cgmh_speed.py": [[], ["--outputs", "full", "class", "adaptive:div=2", "mos:2", "kerbs:2"]],
    "gpu_check.py": [["--device", "cpu"]],
    "history_20news.py": [[]],
    "inference_corpora.py": [[], ["--data", "ptb"]],
    "mcmc_backends.py": [[]],
    "mixture_text.py": [[], ["--data", "dailydialog"]],
    "numpyro_generic.py": [[]],
    "nvdm_20news.py": [[]],
    "output_layers.py": [
        ["--part", "quality"],
        ["--part", "quality", "--story", "lstm-vae"],
        ["--part", "speed"],
    ],
    "overhead.py": [[], ["--story", "lstm-vae"]],
    "posterior_quality.py": [[]],
    "ptb_lm.py": [["--story", "lstm-vae"], ["--story", "rnnlm"]],
    "readme_commands.py": [["--larger"]],
    "reader_fuzz.py": [[]],
    "savae_cost.py": [[]],
    "savae_synthetic.py": [[]],
    "threads.py": [[]],
    "topic_models_20news.py": [[], ["--part", "speed"]],
}
CASES = [(name, argv) for name, variants in sorted(SMOKE_ARGS.items()) for argv in variants]


def case_id(name, argv):
    return " ".join([name, *argv])


INFERENCES = ["vae", "svi:2", "vae+svi:2", "sa-vae:2"]
HISTORY_RSM = [f"fabula RSM 4 by {k}, k->5" for k in ("cd:1", "pcd:1")]
HISTORY_BELIEF_NETS = [
    *(f"fabula SBN 4 by {k}" for k in ("wake-sleep", "rws:5", "nvil")),
    "fabula fDARN 4 by nvil",
]
HISTORY_ROWS = [
    *HISTORY_RSM,
    "fabula docNADE 4 by maximum likelihood",
    *HISTORY_BELIEF_NETS,
    "fabula NVDM 4 by vae",
    "fabula NVDM 6 by vae",
    "fabula GSM 4 by vae",
]
LOOPS = {"fabula", "fabula+validation", "plain"}
CHECKS = {
    "adversarial.py --part oracle": lambda r: (
        list(r["summary"]) == ["random", "mle", "seqgan", "gumbel-gan"]
        and all(math.isfinite(v["nll_oracle"]["median"]) for v in r["summary"].values())
    ),
    "adversarial.py --part ptb": lambda r: (
        list(r["rows"]) == ["mle", "seqgan", "gumbel-gan"]
        and all(len(row["points"]) == 2 for row in r["rows"].values())
        and all(0 <= p["self_bleu4"] <= 100 for row in r["rows"].values() for p in row["points"])
    ),
    "adversarial.py --part speed": lambda r: r["ratio"] > 0,
    # every row scored by both estimators on each seed; both samplers timed
    "topic_models_20news.py": lambda r: (
        list(r["runs"]) == ["collapsed-gibbs", "vb", "vae", "scikit-learn", "lda"]
        and all(list(by_seed) == [0, 1] for by_seed in r["runs"].values())
        and all(len(s["estimates"]) == 2 and -1 <= s["npmi"]["median"] <= 1 for s in r["summary"].values())
    ),
    "topic_models_20news.py --part speed": lambda r: list(r["rows"]) == [3] and r["rows"][3]["ratio"] > 0,
    # every row on both seeds with its topics scored; each seed's RSM figure inside its band; each
    # SBN and fDARN row's q scored against its Gibbs reference
    "history_20news.py": lambda r: (
        list(r["rows"]) == HISTORY_ROWS
        and all(list(row["seeds"]) == [0, 1] for row in r["rows"].values())
        and all(-1 <= row["summary"]["npmi"]["median"] <= 1 for row in r["rows"].values())
        and all(
            s["band"]["low"] <= s["estimates"]["AIS (2 runs, 2 steps)"]["perplexity"] <= s["band"]["high"]
            for name in HISTORY_RSM
            for s in r["rows"][name]["seeds"].values()
        )
        and all(
            0 <= s["posterior"]["mean_abs_error"] <= 1
            for name in HISTORY_BELIEF_NETS
            for s in r["rows"][name]["seeds"].values()
        )
    ),
    "gpu_check.py --device cpu": lambda r: (
        r["suite"]["returncode"] == 0
        and list(r["throughput"]["rows"]) == ["fp32", "tf32", "bf16"]
        and "skipped" in r["throughput"]["rows"]["tf32"]  # a CUDA mode
        and list(r["savae"]["ratios"]) == ["vae", "sa-vae exact", "sa-vae finite-difference"]
        and list(r["nuts"]["nvdm"]) == list(r["nuts"]["lstm-vae oracle"]) == ["cpu"]
        and len(r["ddp"]["rows"]) == 2
    ),
    "cgmh_ptb.py": lambda r: all(
        r[k]["satisfied_states"] == 1.0 and r[k]["samples_satisfied"] == 1.0 for k in ("exact", "released")
    ),
    "cgmh_quora.py": lambda r: r["bleu"]["copy the source"]["ori"] == 100.0 and len(r["sources"]) == 4,
    "cgmh_speed.py": lambda r: (
        [row["chains"] for row in r["by_chains"]] == [1, 2] and "shares" in r["by_chains"][0]
    ),
    "inference_corpora.py": lambda r: list(r) == INFERENCES,
    "inference_corpora.py --data ptb": lambda r: list(r) == INFERENCES,
    "mcmc_backends.py": lambda r: all(
        len(p["rows"]) == 3 and len(p["ratio_per_item"]) == 1 for p in r.values()
    ),
    "mixture_text.py": lambda r: list(r) == ["vae", "gmvae", "dgmvae"] and "mixture" in r["dgmvae"],
    "mixture_text.py --data dailydialog": lambda r: "clusters" in r["dgmvae"] and "clusters" not in r["vae"],
    "numpyro_generic.py": lambda r: all(
        list(p["rows"]) == ["numpyro, generic twin", "numpyro, hand twin", "pyro"]
        and len(p["ratios"]) == 3
        and list(p["paired_ratios"]) == ["generic / pyro", "hand / pyro"]
        for p in r.values()
    ),
    # the tiny corpus's perplexity is far below the paper's 836: reached after the first epoch
    "nvdm_20news.py": lambda r: r["reached_836"]["epoch"] == 1,
    # every layer trained, evaluated and timed, its training estimator named
    "cgmh_speed.py --outputs full class adaptive:div=2 mos:2 kerbs:2": lambda r: (
        list(r["median"])
        == [f"{o} x {c}" for c in (1, 2) for o in ("full", "class", "adaptive:div=2", "mos:2", "kerbs:2")]
        and min(r["median"].values()) > 0
    ),
    "output_layers.py --part quality": lambda r: (
        list(r["rows"]) == ["full", "class", "adaptive", "sampled", "mos", "kerbs"]
        and r["rows"]["sampled"]["training_estimator"].startswith("sampled softmax")
        and all(row["training_estimator"] == "exact" for name, row in r["rows"].items() if name != "sampled")
    ),
    "output_layers.py --part quality --story lstm-vae": lambda r: all(
        row["kl"] >= 0 for row in r["rows"].values()
    ),
    "output_layers.py --part speed": lambda r: (
        len(r["rows"]) == 6 and all(v["train"] > 0 for v in r["rows"].values())
    ),
    "overhead.py": lambda r: set(r["median_epoch_seconds"]) == LOOPS and r["story"] == "nvdm",
    "overhead.py --story lstm-vae": lambda r: set(r["median_epoch_seconds"]) == LOOPS and r["batches"] == 2,
    "posterior_quality.py": lambda r: list(r["20news"]["rows"]) == ["vae", "svi:2", "refine:2"],
    "ptb_lm.py --story lstm-vae": lambda r: list(r["reports"]) == ["elbo", "iw"] and len(r["history"]) == 1,
    "ptb_lm.py --story rnnlm": lambda r: list(r["reports"]) == ["exact"] and r["reports"]["exact"]["kl"] == 0,
    # every README command ran, and the comparisons printed their ordering by each figure
    "readme_commands.py --larger": lambda r: (
        len(r) == 6 and all(len(v["orderings"]) == 2 for k, v in r.items() if "compare" in k)
    ),
    "reader_fuzz.py": lambda r: sum(row["crash"] + row["inconsistent"] for row in r["readers"].values()) == 0,
    "savae_cost.py": lambda r: list(r) == ["vae", "sa-vae exact", "sa-vae finite-difference"],
    "savae_synthetic.py": lambda r: {"fixed", "learned"} <= set(r) and "nll" in r["true"],
    "threads.py": lambda r: len(r["results"]) == 4 and all(v["1"] > 0 for v in r["results"].values()),
}


def load(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name[:-3]}", BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (caches left out)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_every_benchmark_is_listed():
    assert sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in HELPERS) == sorted(SMOKE_ARGS)
    assert sorted(CHECKS) == sorted(case_id(*case) for case in CASES)


@pytest.mark.parametrize(("name", "argv"), CASES, ids=[case_id(*case) for case in CASES])
def test_benchmark_smoke(name, argv, capsys, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import results_log
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # their run folders, made by tempfile
    # restored afterwards: mcmc_backends sets XLA_FLAGS, torch its cache folder (under tempfile's)
    for variable in ("XLA_FLAGS", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(variable, raising=False)
    threads, before, datasets = torch.get_num_threads(), snapshot(BENCHMARKS), dict(DATASETS)
    try:
        results = load(name).main(["--smoke", *argv])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "|---|" in out  # its table
    assert "(smoke: " in out  # recorded, but in a temporary folder
    assert snapshot(BENCHMARKS) == before  # nothing written to RESULTS.md, results/ or anywhere here
    assert DATASETS == datasets  # the registry expects the real corpora's files again
    assert CHECKS[case_id(name, argv)](results)
