"""Data-parallel training on the CPU with gloo: processes started with torchrun's variables
(tests/ddp_worker.py), compared with one process."""

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import BATCH, KINDS, PCD_RUN, RUN, fit_kind

from fabula.checkpoint import load_checkpoint
from fabula.data import synthetic_nvdm_corpus
from fabula.data.corpus import DataParallel
from fabula.distributed import World
from fabula.errors import RunError
from fabula.run import TrainConfig, load_run, train
from fabula.run.resume import WorldSizeChanged, _restore_local_state, restore_training_state

pytestmark = pytest.mark.thorough  # each test starts torchrun's processes

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path, world_size: int = 2) -> None:
    """Run ``scenario`` of the worker in ``world_size`` processes, as torchrun would start them."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for rank, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"rank {rank} of {scenario} failed:\n{output[-3000:]}"


def test_data_parallel_batches_are_blocks_of_the_global_batches():
    corpus = synthetic_nvdm_corpus(num_train=40, num_test=4, vocab_size=20, latent_dim=2)[0]["train"]
    ranks = [corpus.data_parallel(r, 3) for r in range(3)]
    whole = [b.index for b in corpus.batches(12, shuffle=True, seed=5, epoch=2)]
    parts = [[b.index for b in part.batches(4, shuffle=True, seed=5, epoch=2)] for part in ranks]
    assert [len(p) for p in parts] == [part.num_batches(4) for part in ranks] == [4, 4, 4]
    for step, rows in enumerate(whole):
        share = len(rows) // 3
        assert all(len(p[step]) == share for p in parts)  # equally large
        assert torch.equal(torch.cat([p[step] for p in parts]), rows[: 3 * share])
    assert len(whole[-1]) == 4  # 40 = 3 * 12 + 4: one row each, and the epoch's last visited by no rank
    with pytest.raises(ValueError, match="rank must lie"):
        DataParallel(corpus, 3, 3)


@pytest.fixture(scope="module")
def two_processes(device) -> torch.device:
    """The suite's device, for two processes of one device each (skipped where there are not two)."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip(f"two processes take a GPU each; this machine has {torch.cuda.device_count()}")
    return device


@pytest.fixture(scope="module")
def kinds(two_processes, tmp_path_factory):
    out = tmp_path_factory.mktemp("kinds")
    launch("kinds", out)
    return [torch.load(out / f"kinds-{r}.pt") for r in range(2)]


@pytest.mark.parametrize("kind", [f"{s} {k}" for s, k in KINDS])
def test_every_training_kind_steps_alike_on_every_rank(kinds, kind):
    first, second = kinds[0][kind], kinds[1][kind]
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)  # DDP averaged the gradients: the replicas stay identical


def test_two_processes_with_batch_b_end_where_one_with_batch_2b_does(kinds, two_processes):
    """Losses are means over the batch and DDP averages the ranks' gradients, so two equal
    halves of a batch of 2B give the mean gradient of the whole batch."""
    one = fit_kind("rnnlm", "vae", 2 * BATCH, two_processes).cpu()
    torch.testing.assert_close(kinds[0]["rnnlm vae"], one, rtol=1e-5, atol=1e-6)
    halves = fit_kind("rnnlm", "vae", BATCH, two_processes).cpu()  # one process with batch B differs
    assert not torch.allclose(halves, one, rtol=1e-5, atol=1e-6)


def test_nvil_under_two_processes_tracks_the_signal_of_the_global_batch(kinds, two_processes):
    """NVIL's running mean and variance of the learning signal are those of the global batch
    (the ranks' sums reduced), so with the same draw for each datum (``common_draws``) two
    processes with batch B end, parameters and buffers, where one with batch 2B does."""
    one = fit_kind("sbn", "nvil", 2 * BATCH, two_processes, common=True).cpu()
    torch.testing.assert_close(kinds[0]["sbn nvil common"], one, rtol=1e-5, atol=1e-6)
    halves = fit_kind("sbn", "nvil", BATCH, two_processes, common=True).cpu()
    assert not torch.allclose(halves, one, rtol=1e-5, atol=1e-6)


def test_a_two_process_pcd_run_resumed_ends_as_an_uninterrupted_one(two_processes, tmp_path):
    """Every rank's persistent chains are checkpointed and each rank resumes its own."""
    for scenario in ("pcd-uninterrupted", "pcd-first", "pcd-resumed"):
        launch(scenario, tmp_path)
    path = tmp_path / "pcd-uninterrupted" / "checkpoint.safetensors"
    done, resumed = (
        load_checkpoint(path),
        load_checkpoint(tmp_path / "pcd-interrupted" / "checkpoint.safetensors"),
    )
    assert resumed.metadata["epoch"] == done.metadata["epoch"] == 2
    chains = done.state["local"]
    assert len(chains) == 2 and not torch.equal(chains[0], chains[1])  # each rank's own
    assert torch.equal(done.state["inference"]["chains"], chains[0])
    for r in range(2):
        assert torch.equal(resumed.state["local"][r], chains[r]), f"rank {r}'s chains"
    for key, value in done.weights["story"].items():
        assert torch.equal(resumed.weights["story"][key], value), key

    inference = load_run(tmp_path / "pcd-uninterrupted").inference
    for local, field in (
        (chains[:1], r"'state/local' is not a list of one entry per rank \(2\)"),
        ([chains[0], chains[1][:, :2]], r"'state/local/1' does not fit the pcd:1 setup"),
    ):
        with pytest.raises(RunError, match=field):
            restore_training_state(inference, dataclasses.replace(done, state={**done.state, "local": local}))
    # one process resuming the two: rank 0's chains; a rank the file has none for starts afresh
    with pytest.warns(WorldSizeChanged, match="written by 2 data-parallel process"):
        restore_training_state(inference, done)
    assert torch.equal(inference.chains, chains[0])
    _restore_local_state(inference, path, chains, World(2, 3))
    assert inference.chains is None
    # a file written before the ranks' own states were kept: the inference state's chains
    old = {k: v for k, v in done.state.items() if k != "local"}
    with pytest.warns(WorldSizeChanged):
        restore_training_state(inference, dataclasses.replace(done, state=old))
    assert torch.equal(inference.chains, chains[0])
    config = TrainConfig.create("rsm", device=str(two_processes), **{**PCD_RUN, "epochs": 3})
    with pytest.warns(WorldSizeChanged):
        assert [m["epoch"] for m in train(config, path.parent, resume=True, progress=False)] == [3]
    assert len(load_checkpoint(path).state["local"]) == 1


def test_a_killed_two_process_run_resumed_ends_as_an_uninterrupted_one(two_processes, tmp_path):
    launch("uninterrupted", tmp_path)
    launch("killed", tmp_path)
    interrupted = tmp_path / "interrupted" / "checkpoint.safetensors"
    assert load_checkpoint(interrupted).metadata["epoch"] == 1  # killed in epoch 2
    launch("resumed", tmp_path)
    done, resumed = (
        load_checkpoint(tmp_path / n / "checkpoint.safetensors") for n in ("uninterrupted", "interrupted")
    )
    assert resumed.metadata["epoch"] == done.metadata["epoch"] == RUN["epochs"]
    assert len(done.state["rng"]) == 2  # every rank's random state
    assert not torch.equal(done.state["rng"][0]["cpu"], done.state["rng"][1]["cpu"])
    for name, weights in done.weights.items():
        for key, value in weights.items():
            assert torch.equal(resumed.weights[name][key], value), f"{name}/{key}"
    assert done.metadata["history"][-1]["loss"] == resumed.metadata["history"][-1]["loss"]
    assert done.metadata["history"][-1]["eval_num_data"] == 500  # each rank scored its shard, gathered

    # resumed by one process: the run continues, and says that it cannot replay the two
    config = TrainConfig.create("nvdm", device=str(two_processes), **{**RUN, "epochs": RUN["epochs"] + 1})
    with pytest.warns(WorldSizeChanged, match="written by 2 data-parallel process"):
        history = train(config, tmp_path / "uninterrupted", resume=True, progress=False)
    assert [m["epoch"] for m in history] == [RUN["epochs"] + 1]
