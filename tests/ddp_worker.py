"""One data-parallel process of tests/test_distributed.py, started with the variables torchrun
sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): ``python tests/ddp_worker.py SCENARIO OUT``.

* ``kinds``: every training inference kind takes a few steps through DistributedDataParallel on
  its part of each batch; each rank saves its parameters to ``OUT/kinds-RANK.pt``;
  and NVIL's parameters and buffers with :func:`common_draws` under ``"sbn nvil common"``;
* ``uninterrupted`` / ``killed`` / ``resumed``: ``fabula.run.train`` of a tiny NVDM into
  ``OUT/uninterrupted`` or ``OUT/interrupted``; ``killed`` ends the process in the middle of epoch 2, without any clean-up;
* ``pcd-uninterrupted`` / ``pcd-first`` / ``pcd-resumed``: a tiny RSM trained by ``pcd:1`` for
  2 epochs into ``OUT/pcd-uninterrupted``, or for 1 into ``OUT/pcd-interrupted`` and resumed there for the 2nd.
"""

import contextlib
import functools
import os
import sys
import unittest.mock
from pathlib import Path

import pyro
import torch

from fabula import distributed
from fabula.data import synthetic_nvdm_corpus
from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.devices import resolve
from fabula.inference.kinds import build
from fabula.run import TrainConfig, inference_setup, train
from fabula.run.stories import recipe

TINY = {
    "nvdm": {"latent_dim": 2, "hidden": (8,)},
    "rnnlm": {"embed_dim": 8, "hidden_dim": 8},
    "lstm-vae": {"latent_dim": 2, "embed_dim": 8, "hidden_dim": 8},
    "gmvae": {"num_components": 2, "latent_dim": 2, "embed_dim": 8, "hidden_dim": 8},
    "rsm": {"hidden": 4},
    "sbn": {"latent_dim": 2, "hidden": (8,)},
}
KINDS = [
    ("rnnlm", "vae"),
    ("nvdm", "vae"),
    ("gmvae", "vae"),
    ("lstm-vae", "vae"),
    ("lstm-vae", "svi:2"),
    ("lstm-vae", "vae+svi:2"),
    ("lstm-vae", "sa-vae:2"),
    ("lstm-vae", "sa-vae-fd:2"),
    ("lstm-vae", "aggressive"),
    ("sbn", "wake-sleep"),
    ("sbn", "rws:2"),
    ("sbn", "nvil"),
    ("rsm", "cd:1"),
    ("rsm", "pcd:1"),
]
BATCH = 8  # per process
RUN = {"latent_dim": 2, "hidden": (8,), "epochs": 2, "batch_size": 250, "reference": False}
PCD_RUN = {"inference": "pcd:1", "hidden": 4, "batch_size": 100}


@functools.cache
def tiny_splits(kind: str) -> dict:
    """Small corpora (48 or 64 training data, divisible by 2 processes)."""
    if kind == "documents":
        return synthetic_nvdm_corpus(num_train=64, num_test=16, vocab_size=40, latent_dim=3, mean_length=30)[
            0
        ]
    return synthetic_sentence_corpus(num_train=48, num_valid=16, num_test=16, vocab_size=30)[0]


def fitted(
    story_name: str,
    spec: str,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    common: bool = False,
):
    """``(inference, splits)`` after one epoch of ``spec`` on the tiny corpus on ``device`` (this
    process's part of each batch under a process group), with :func:`common_draws` if ``common``."""
    config = TrainConfig.create(story_name, inference=spec, **TINY[story_name])
    r = recipe(story_name)
    splits = tiny_splits(r.reads)
    torch.manual_seed(0)
    story, guide = r.build(config.model, splits["train"])
    story.to(device), guide.to(device)
    inference = build(spec, inference_setup(config, story, guide, splits))
    here = distributed.world()
    parallel = distributed.active()
    inference.trainer.configure(device, precision, inference.modules() if parallel else None)
    data = splits["train"].data_parallel(here.rank, here.size) if parallel else splits["train"]
    with common_draws() if common else contextlib.nullcontext():
        if not common:
            pyro.set_rng_seed(here.rank)
        inference.fit(data, epochs=1, batch_size=batch_size, seed=0, progress=False)
    return inference, splits


def fit_kind(
    story_name: str, spec: str, batch_size: int, device: torch.device, common: bool = False
) -> torch.Tensor:
    """Every trained parameter of :func:`fitted`'s inference object and every buffer of its
    modules (NVIL's running averages), flattened in float64."""
    inference, _ = fitted(story_name, spec, batch_size, device, common=common)
    buffers = [b for m in inference.modules().values() for b in m.buffers()]
    return torch.cat([t.detach().flatten().double() for t in [*inference.trainer.parameters, *buffers]])


def _global_bernoulli(self, sample_shape=()):
    shape = self._extended_shape(sample_shape)
    here = distributed.world()
    rows = shape[-2]  # the batch's dimension (the event's is the last)
    uniforms = torch.rand(*shape[:-2], here.size * rows, shape[-1], device=self.probs.device)
    block = uniforms[..., here.rank * rows : (here.rank + 1) * rows, :]
    return (block < self.probs.expand(shape)).to(self.probs.dtype)


@contextlib.contextmanager
def common_draws():
    """Bernoulli draws (the SBN guide's) of every rank cut from uniforms of the whole global
    batch, drawn alike on every rank from seed 0, so that N ranks with batch B draw for each
    datum what one process with batch N * B draws for it."""
    pyro.set_rng_seed(0)
    with unittest.mock.patch.object(torch.distributions.Bernoulli, "sample", _global_bernoulli):
        yield


def main(scenario: str, out: Path) -> None:
    torch.set_num_threads(1)
    name = os.environ.get("FABULA_DEVICE", "cpu")
    device = resolve(name)  # cuda: this process's cuda:LOCAL_RANK
    if scenario == "kinds":
        with distributed.process_group(device) as here:
            params = {f"{s} {k}": fit_kind(s, k, BATCH, device).cpu() for s, k in KINDS}
            params["sbn nvil common"] = fit_kind("sbn", "nvil", BATCH, device, common=True).cpu()
        torch.save(params, out / f"kinds-{here.rank}.pt")
        return
    if scenario.startswith("pcd-"):
        epochs = 1 if scenario == "pcd-first" else 2
        config = TrainConfig.create("rsm", device=name, **{**PCD_RUN, "epochs": epochs})
        folder = "pcd-uninterrupted" if scenario == "pcd-uninterrupted" else "pcd-interrupted"
        train(config, out / folder, resume=scenario == "pcd-resumed", progress=False)
        return
    config = TrainConfig.create("nvdm", device=name, **RUN)
    if scenario == "killed":
        from fabula.inference.variational import VariationalInference

        step = VariationalInference.step
        steps_per_epoch = 2000 // (2 * RUN["batch_size"])

        def dies_in_epoch_2(self, batch):
            if self.num_steps == steps_per_epoch + 1:
                os._exit(0)
            return step(self, batch)

        VariationalInference.step = dies_in_epoch_2
    folder = "uninterrupted" if scenario == "uninterrupted" else "interrupted"
    train(config, out / folder, resume=scenario == "resumed", progress=False)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
