r"""Data-parallel training with ``torchrun`` and torch's ``DistributedDataParallel``.

``torchrun --nproc-per-node N -m fabula train STORY ...`` starts N processes (ranks); each
joins one process group (NCCL on CUDA, gloo on the CPU), holds a replica of the story and
guide, and takes its part of every batch:

* **data**: each step's global batch of ``N * B`` rows is cut from the epoch's order
  (:meth:`~fabula.data.corpus.Corpus.order`) exactly as one process with batch ``N * B``
  would cut it, and rank ``r`` takes its ``r``-th block of ``B``
  (:meth:`~fabula.data.corpus.Corpus.data_parallel`);
* **gradients**: DDP averages them over the ranks during the backward pass. Every training
  loss in fabula is a *mean* over the batch's data (the summed negative bound divided by the
  batch size), and the ranks' batches are equally large, so the average of the ranks' mean
  gradients is the gradient of the mean over the global batch: N ranks with batch B take the
  same steps as one process with batch ``N * B``. (A loss summed over the batch would need the
  average multiplied by N.) An epoch's last global batch of ``m`` rows gives each rank
  ``m // N``; the ``m mod N`` rows left over (at most N - 1, different ones each epoch) are
  not visited, so that the ranks' batches stay equal;
* **decisions**: the loss a step reports is averaged over the ranks before anything is decided
  from it (a non-finite loss stops every rank; He et al.'s aggressive inner loop stops on every
  rank at once), and per-epoch figures are reduced over the ranks (:func:`all_sum`);
* **evaluation**: each rank scores its shard (:meth:`~fabula.data.corpus.Corpus.shard`) and the
  per-datum results are gathered (:func:`gather`);
* **statistics**: a running average taken from the batch is reduced over the ranks first:
  NVIL's mean and variance of its learning signal come from the ranks' summed counts, sums and
  sums of squares, so they are those of the global batch (DDP sends rank 0's buffers to every
  rank before each step, which then changes nothing);
* **files**: rank 0 alone writes the checkpoint, metrics and plots; the checkpoint holds every
  rank's random state and the state each rank keeps of its own
  (:class:`~fabula.inference.base.RankLocalState`: persistent CD's chains, drawn per rank), so
  that a run resumed with as many ranks continues exactly. Resumed with another number, rank
  ``r`` takes the saved rank ``r``'s chains, and a rank the file has none for starts new ones.

(A non-amortized table of λ, not a registered kind, would need its rows sharded.)

Multi-node: ``torchrun --nnodes M --nproc-per-node N --node-rank I --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m fabula train ...`` on each node (the same command, ``I`` its
node's number). Rank 0 reads the checkpoint to resume and sends it to the other ranks, so only
rank 0's node needs ``--out``.

References: S. Li et al. PyTorch Distributed: Experiences on Accelerating Data Parallel
Training. VLDB 2020.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fabula.errors import FabulaError

#: The environment variables ``torchrun`` sets for each process it launches.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (rank 0 of 1 outside ``torchrun``)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process is rank 0, the one that writes files."""
        return self.rank == 0


def world() -> World:
    """The process group this process belongs to (rank 0 of 1 when there is none)."""
    if active():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def active() -> bool:
    """Whether this process belongs to a process group (possibly of one rank)."""
    return dist.is_available() and dist.is_initialized()


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting its variables) started this process."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def launch_rank() -> int:
    """This process's rank as the launcher numbered it (0 outside a launcher)."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the launcher's process group for the block (NCCL for a CUDA ``device``, gloo
    otherwise), or do nothing outside a launcher; yields this process's :class:`World`."""
    if not launched() or active():
        yield world()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
    )
    try:
        yield world()
        # leave together: gloo aborts a process ("terminate called without an active exception")
        # that tears its group down while another rank is still at work (rank 0 writing)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _carrier() -> torch.device:
    """The device collectives run on: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(*values: float) -> list[float]:
    """Each of ``values`` summed over the ranks (unchanged in a world of one), in float64."""
    if world().size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_carrier())
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_mean(value: float) -> float:
    """``value`` averaged over the ranks."""
    return all_sum(value)[0] / world().size


def gather(obj) -> list:
    """Every rank's ``obj`` (picklable; tensors travel as they are), in rank order."""
    if world().size == 1:
        return [obj]
    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Failed:
    """What rank 0 sends when its part failed with a user-facing error: its class and message."""

    def __init__(self, error: FabulaError):
        self.kind, self.message = type(error), str(error)


def on_main(compute: Callable[[], object]):
    """``compute()`` on rank 0, its result sent to every rank; a :class:`~fabula.errors.FabulaError`
    raised there is raised on every rank (so that none waits for a rank that stopped)."""
    result = None
    if world().main:
        try:
            result = compute()
        except FabulaError as e:
            if world().size == 1:
                raise
            result = _Failed(e)
    result = broadcast(result)
    if isinstance(result, _Failed):
        raise result.kind(result.message)
    return result


class Replicas(torch.nn.Module):
    """The trained modules as one module for ``DistributedDataParallel``, whose forward computes
    a loss given as a function, so that DDP averages the gradients of whatever parameters that
    loss reached."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)

    def forward(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        return compute()


def replicate(modules: dict[str, torch.nn.Module], unused: bool):
    """``modules`` wrapped in ``DistributedDataParallel`` over the current process group (rank
    0's parameters and buffers sent to every rank first); ``unused``: whether a loss may leave
    some of their trained parameters without a gradient (DDP then looks for them each step)."""
    return torch.nn.parallel.DistributedDataParallel(Replicas(modules), find_unused_parameters=unused)
