"""Devices and precision: no device named in the package, every training kind on the suite's
device (FABULA_DEVICE), --device refused in one line where the machine lacks it, bf16 training."""

import ast
import os
from pathlib import Path

import pytest
import torch
from ddp_worker import KINDS, fitted

from fabula.cli import main
from fabula.devices import autocast, resolve, set_precision, tensor_cores
from fabula.errors import SettingsError
from fabula.evaluation import default_estimator, evaluate
from fabula.run import TrainConfig, load_run, train

PACKAGE = Path(__file__).resolve().parents[1] / "fabula"
NAMING = {"devices.py", "distributed.py"}  # the modules whose work is to resolve devices
DEVICES = ("cpu", "cuda", "mps")


def _names_a_device(node: ast.AST) -> bool:
    """A call that puts a tensor or module on a named device: ``x.cuda()``, ``x.to("cpu")``,
    ``f(..., device="cuda")``, ``torch.device("cuda")``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    named = [
        a for a in node.args[:1] if isinstance(a, ast.Constant) and str(a.value).split(":")[0] in DEVICES
    ]
    if isinstance(func, ast.Attribute) and func.attr == "cuda" and not node.args:
        return True
    if isinstance(func, ast.Attribute) and func.attr in ("to", "device") and named:
        return True
    return any(
        k.arg == "device"
        and isinstance(k.value, ast.Constant)
        and str(k.value.value).split(":")[0] in DEVICES
        for k in node.keywords
    )


def test_no_tensor_is_put_on_a_named_device_in_the_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in NAMING:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if _names_a_device(node):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, (
        "devices named in the package (take them from the data or a device argument):\n" + "\n".join(found)
    )


def test_the_check_finds_the_forms_it_looks_for():
    hits = [
        _names_a_device(ast.parse(code).body[0].value)
        for code in ("x.cuda()", "x.to('cuda:1')", "torch.zeros(3, device='cpu')", "torch.device('cuda')")
    ]
    misses = [
        _names_a_device(ast.parse(code).body[0].value)
        for code in ("x.to(device)", "torch.zeros(3, device=x.device)", "torch.cuda.is_available()")
    ]
    assert all(hits) and not any(misses)


@pytest.mark.parametrize("story,spec", KINDS, ids=[f"{s}-{k}" for s, k in KINDS])
def test_every_training_kind_trains_and_evaluates_on_the_device(story, spec, device):
    inference, splits = fitted(story, spec, 8, device)
    assert all(p.device.type == device.type for m in inference.modules().values() for p in m.parameters())
    estimator = "ais:2:20" if story == "rsm" else default_estimator(inference.story)
    summary = evaluate(inference, splits["test"], estimator, batch_size=8).summary()
    assert torch.isfinite(torch.tensor(summary["nll"]))


AUTOCAST_KINDS = [(s, k) for s, k in KINDS if s != "gmvae"]


@pytest.mark.parametrize("story,spec", AUTOCAST_KINDS, ids=[f"{s}-{k}" for s, k in AUTOCAST_KINDS])
def test_every_training_kind_trains_under_bf16_autocast(story, spec, device):
    inference, _ = fitted(story, spec, 8, device, precision="bf16")
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in inference.trainer.parameters)


def test_bf16_is_refused_where_discrete_latents_are_summed_out():
    with pytest.raises(SettingsError, match="TraceEnum_ELBO"):
        TrainConfig.create("gmvae", precision="bf16")
    TrainConfig.create("gmvae", precision="fp32")


def test_a_device_the_machine_lacks_is_refused_in_one_line(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SettingsError, match="no CUDA device"):
        resolve("cuda")
    for argv in (
        ["train", "nvdm", "--device", "cuda", "--out", str(tmp_path / "run")],
        ["evaluate", str(tmp_path / "run"), "--device", "cuda:1"],
        ["compare", "--device", "cuda"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no CUDA device" in err, err
    assert not (tmp_path / "run").exists()  # refused before anything is written
    with pytest.raises(SettingsError, match="not a torch device"):
        resolve("gpu")


def test_tf32_holds_for_training_steps_only(device):
    set_precision(device, "fp32")  # what evaluation computes in
    modes = (torch.backends.cuda.matmul, torch.backends.cudnn)
    assert not any(m.allow_tf32 for m in modes)
    with tensor_cores("tf32"):
        assert all(m.allow_tf32 for m in modes)
    with tensor_cores("bf16"):
        assert not any(m.allow_tf32 for m in modes)
    assert not any(m.allow_tf32 for m in modes)


def test_tf32_is_refused_off_cuda(device):
    if device.type == "cuda":
        pytest.skip("TF32 is a CUDA mode")
    with pytest.raises(SettingsError, match="tf32 uses CUDA"):
        set_precision(device, "tf32")


def test_a_bf16_trained_model_is_evaluated_in_float32(tmp_path, device):
    """bf16 autocast changes the training steps (the weights differ from an fp32 run's) but not
    what is stored or evaluated: float32 weights, float32 bounds, finite, computed without autocast."""
    with autocast(device, "bf16"):
        assert torch.is_autocast_enabled(device.type)
    tiny = {"latent_dim": 2, "hidden": (8,), "epochs": 1, "batch_size": 500, "reference": False}
    runs = {}
    for precision in ("bf16", "fp32"):
        config = TrainConfig.create("nvdm", device=str(device), precision=precision, **tiny)
        train(config, tmp_path / precision, progress=False)
        runs[precision] = load_run(tmp_path / precision, device=device)
    weights = {p: dict(r.inference.story.named_parameters()) for p, r in runs.items()}
    assert all(w.dtype == torch.float32 for w in weights["bf16"].values())
    assert any(not torch.equal(w, weights["fp32"][name]) for name, w in weights["bf16"].items())
    report = evaluate(runs["bf16"].inference, runs["bf16"].splits["test"], "iw:4")
    assert not torch.is_autocast_enabled(device.type)
    assert report.nll.dtype == torch.float32 and report.kl.dtype == torch.float32
    assert torch.isfinite(report.nll).all()
    fp32 = evaluate(runs["fp32"].inference, runs["fp32"].splits["test"], "iw:4").summary()
    assert abs(report.summary()["nll"] - fp32["nll"]) < 0.05 * fp32["nll"]  # bf16 trains as well


def test_the_gpu_check_runs_every_test_that_takes_the_device():
    """benchmarks/gpu_check.py names the tests that run on FABULA_DEVICE: none may be missing."""
    script = ast.parse((PACKAGE.parent / "benchmarks" / "gpu_check.py").read_text())
    suite = next(
        ast.literal_eval(node.value)
        for node in script.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SUITE"
    )
    missing = []
    for path in sorted((PACKAGE.parent / "tests").glob("test_*.py")):
        name = f"tests/{path.name}"
        for node in ast.parse(path.read_text()).body:
            takes = isinstance(node, ast.FunctionDef) and "device" in [a.arg for a in node.args.args]
            if takes and node.name.startswith("test_") and not {name, f"{name}::{node.name}"} & set(suite):
                missing.append(f"{name}::{node.name}")
    assert not missing, missing


def test_cpu_threads_come_from_the_flag_then_the_environment_then_half_the_cores(monkeypatch):
    from fabula.devices import THREADS, cpu_threads

    monkeypatch.delenv(THREADS, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpu_threads(3) == 3 and cpu_threads() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert cpu_threads() == 1
    monkeypatch.setenv(THREADS, "2")
    assert cpu_threads() == 2 and cpu_threads(5) == 5
    monkeypatch.setenv(THREADS, "two")
    with pytest.raises(SettingsError, match="FABULA_THREADS='two': give a whole number of threads"):
        cpu_threads()
