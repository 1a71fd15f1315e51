import json
import os
import threading
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fabula.checkpoint import encode, load_checkpoint, save_checkpoint
from fabula.data import DataFormatError
from fabula.errors import RunError
from fabula.run import TrainConfig, load_run, train
from fabula.rundir import RunDirectory
from helpers import nvdm_setup

CHECKPOINT = RunDirectory.CHECKPOINT


def test_round_trip_of_weights_optimizer_and_nested_state(tmp_path):
    story, guide, corpus = nvdm_setup()
    opt = torch.optim.Adam([*story.parameters(), *guide.parameters()], lr=0.01)
    loss = story.decoder(torch.randn(3, 4)).sum() + guide.net.mlp(torch.randn(2, 40)).sum()
    loss.backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": {"cpu": torch.get_rng_state()}, "steps": 7}
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"story": story, "guide": guide}, state, {"epoch": 3, "note": "x"})
    ckpt = load_checkpoint(path)
    assert ckpt.metadata == {"epoch": 3, "note": "x"}
    fresh_story, fresh_guide, _ = nvdm_setup()
    ckpt.load_into({"story": fresh_story, "guide": fresh_guide})
    for a, b in zip(story.state_dict().values(), fresh_story.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    opt2 = torch.optim.Adam([*fresh_story.parameters(), *fresh_guide.parameters()], lr=0.5)
    opt2.load_state_dict(ckpt.state["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.01
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(ckpt.state["rng"]["cpu"], state["rng"]["cpu"]) and ckpt.state["steps"] == 7


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path):
    story, guide, _ = nvdm_setup()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"story": story}, {}, {"epoch": 1})
    with pytest.raises(TypeError, match="cannot store"):
        save_checkpoint(path, {"story": story}, {"bad": object()}, {"epoch": 2})
    assert load_checkpoint(path).metadata == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(RunError, match="not a fabula checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(RunError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.safetensors")


def test_a_checkpoint_renamed_over_the_one_being_read_is_never_mixed_into_it(tmp_path):
    """A trainer commits by renaming a new file over the checkpoint: a reader meanwhile gets the
    old file or the new one, whole, never a false "damaged" or a raw error."""
    saved = {}
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        module = torch.nn.Linear(256, 256)
        path = tmp_path / f"{epoch}.safetensors"
        save_checkpoint(path, {"m": module}, {"steps": torch.full((1000 * epoch,), epoch)}, {"epoch": epoch})
        saved[epoch] = (path.read_bytes(), module.state_dict())
    target = tmp_path / "checkpoint.safetensors"
    target.write_bytes(saved[1][0])
    stop, renames, failures = threading.Event(), [0], []

    def commit_in_a_loop():
        try:
            while not stop.is_set():
                for epoch, (data, _) in saved.items():
                    tmp = tmp_path / f".checkpoint.safetensors.tmp{epoch}"
                    tmp.write_bytes(data)
                    os.replace(tmp, target)
                    renames[0] += 1
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    writer = threading.Thread(target=commit_in_a_loop)
    writer.start()
    seen, loads, deadline = set(), 0, time.monotonic() + 2.0
    try:  # a few hundred loads, or as many as 2 seconds allow while the writer has renamed too few
        while loads < 300 or renames[0] < 100:
            checkpoint = load_checkpoint(target)
            epoch = checkpoint.metadata["epoch"]
            assert checkpoint.metadata == {"epoch": epoch} and epoch in saved
            for key, value in saved[epoch][1].items():
                assert torch.equal(checkpoint.weights["m"][key], value), (epoch, key)
            assert torch.equal(checkpoint.state["steps"], torch.full((1000 * epoch,), epoch))
            seen.add(epoch)
            loads += 1
            if time.monotonic() > deadline:
                break
    finally:
        stop.set()
        writer.join()
    assert not failures, failures
    assert loads >= 20 and renames[0] >= 20 and seen == {1, 2}, (loads, renames, seen)


def small_config(**kw):
    return TrainConfig.create(
        "nvdm", **{"epochs": 2, "latent_dim": 4, "hidden": (16,), "batch_size": 128, **kw}
    )


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"optimizer": "sgd", "lr": 0.004, "lr_decay": 0.5, "decay_after": 1, "clip_norm": 1.0},
        {"inference": "svi:2"},
        {"inference": "vae+svi:2"},
        {"inference": "sa-vae:2"},
    ],
    ids=["adam", "sgd-decay", "svi", "vae+svi", "sa-vae"],
)
def test_resume_equals_an_uninterrupted_run(tmp_path, settings):
    train(small_config(epochs=3, **settings), tmp_path / "straight", progress=False)
    train(small_config(epochs=1, **settings), tmp_path / "split", progress=False)
    train(small_config(epochs=3, **settings), tmp_path / "split", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "split" / CHECKPOINT)
    drop = lambda ms: [{k: v for k, v in m.items() if k != "train_seconds"} for m in ms]  # noqa: E731
    untimed = lambda meta: {**meta, "history": drop(meta["history"])}  # noqa: E731
    assert untimed(a.metadata) == untimed(b.metadata) and a.metadata["epoch"] == 3
    for name in a.weights:
        for key in a.weights[name]:
            assert torch.equal(a.weights[name][key], b.weights[name][key]), (name, key)
    ma, mb = (RunDirectory(tmp_path / run).history() for run in ("straight", "split"))
    assert drop(ma) == drop(mb) == drop(b.metadata["history"]) and len(ma) == 3
    if "lr_decay" in settings:  # the step size halves after the first epoch; the checkpoint holds the next's
        assert [m["lr"] for m in ma] == [0.004, 0.002, 0.001]
        assert b.state["inference"]["trainer"]["optimizers"]["joint"]["param_groups"][0]["lr"] == 0.0005
    loaded = load_run(tmp_path / "split")  # the run is loaded back as the kind that was trained
    assert loaded.inference.spec == settings.get("inference", "vae")
    assert (
        type(loaded.inference).__name__
        == {
            "vae": "Amortized",
            "svi:2": "StochasticVI",
            "vae+svi:2": "AmortizedSVI",
            "sa-vae:2": "SemiAmortized",
        }[loaded.inference.spec]
    )


def test_unknown_optimizer_and_bad_decay_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        train(small_config(optimizer="rmsprop"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="lr.decay must"):
        small_config(lr_decay=0.0)
    with pytest.raises(ValueError, match="does not train"):
        small_config(inference="nuts")
    with pytest.raises(ValueError, match="unknown setting 'num_components' for the nvdm story"):
        small_config(num_components=3)


def test_resume_refuses_changed_settings_and_existing_runs(tmp_path):
    train(small_config(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="--resume"):
        train(small_config(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="only --epochs"):
        train(small_config(epochs=2, lr=0.5), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ValueError, match="changed: optimizer lr, run seed$"):
        train(small_config(epochs=2, lr=0.5, seed=3), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ValueError, match="a run of the nvdm story, not of rnnlm"):
        train(TrainConfig.create("rnnlm"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(RunError, match="nothing to resume"):
        train(small_config(), tmp_path / "other", resume=True, progress=False)


def test_vocabulary_mismatch_with_a_checkpoint_is_an_error(tmp_path):
    train(small_config(epochs=1), tmp_path / "run", progress=False)
    path = tmp_path / "run" / CHECKPOINT
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["fabula"])
    header["metadata"]["vocab"] = {"size": 2000, "sha256": "0" * 64}
    path.write_bytes(encode(load_file(str(path)), json.dumps(header)))
    with pytest.raises(DataFormatError, match="vocabulary .* differs from the checkpoint's \\(2000 words"):
        load_run(tmp_path / "run")
