"""The corpus contract shared by every kind of data: rows, batches of rows, and the epoch order.

A kind of corpus (:class:`~fabula.data.BagOfWords`, :class:`~fabula.data.text.TextCorpus`,
:class:`~fabula.data.Vectors`) says how many rows it has, how it builds a batch from row
indices and how it takes a subset of its rows; :class:`Corpus` owns the rest once: the shuffled
order of each epoch, the batching loop, subsets and data-parallel shards.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Self

import torch

SEED_STRIDE = 1_000_003
"""``seed * SEED_STRIDE + epoch`` differs for every ``(seed, epoch)`` with ``0 <= epoch < SEED_STRIDE``."""


def shuffle_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles epoch ``epoch`` of a run with seed ``seed``: seeded with
    ``seed * 1_000_003 + epoch``, the package's one shuffle formula, so that an order depends on
    ``(seed, epoch)`` alone and a run resumed at any epoch replays the same batches."""
    return torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)


def cut(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``rows`` in consecutive pieces of ``size`` (the last may be shorter; none if ``rows`` is empty)."""
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _check_rank(rank: int, world_size: int, rows: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in 0..{world_size - 1} for world_size {world_size}, got {rank}")
    if world_size > rows:
        raise ValueError(f"{rows} rows cannot be shared among {world_size} ranks with a row each")


class Corpus(ABC):
    """Rows of data batched for training and evaluation.

    A batch carries ``index``, the positions of its rows in the corpus it comes from
    (``0 .. len(corpus) - 1``); per-datum parameter tables of non-amortized inference are sized
    ``len(corpus)`` and look rows up by it.
    """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def batch(self, index, device: torch.device | str = "cpu"):
        """The rows at ``index`` (a 1-d tensor or list of positions) as one batch on ``device``."""

    @abstractmethod
    def _select(self, index: torch.Tensor) -> Self:
        """A corpus of the same kind holding the rows at ``index`` (checked, 1-d, in range)."""

    def _rows(self, generator: torch.Generator | None) -> torch.Tensor:
        """All rows, in order without ``generator``, else its first draw: a random permutation."""
        n = len(self)
        return torch.arange(n) if generator is None else torch.randperm(n, generator=generator)

    def _batch_rows(self, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
        """The row indices of each batch, in the order they are visited: :meth:`_rows` cut into
        ``batch_size`` pieces. Kinds that group rows differently override this and may draw more
        from ``generator`` after :meth:`_rows`."""
        return cut(self._rows(generator), batch_size)

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        """The shuffled row order of epoch ``epoch`` of a run with seed ``seed``: a permutation of
        ``range(len(self))`` that depends on ``(seed, epoch)`` only (see :func:`shuffle_generator`).
        Shuffled batches are cut from it."""
        return self._rows(shuffle_generator(seed, epoch))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        device: torch.device | str = "cpu",
        **options,
    ) -> Iterator:
        """Every row once, in batches of ``batch_size`` (one may be shorter).

        Without ``shuffle`` the rows come in corpus order; with it, the batches are cut from
        :meth:`order` ``(seed, epoch)``, so an epoch sees the same batches however its run was
        resumed. ``options`` go to the kind's grouping (``pool`` of
        :class:`~fabula.data.text.TextCorpus`).
        """
        return (
            self.batch(rows, device) for rows in self.epoch_rows(batch_size, shuffle, seed, epoch, **options)
        )

    def epoch_rows(
        self, batch_size: int, shuffle: bool, seed: int, epoch: int, **options
    ) -> list[torch.Tensor]:
        """The row indices of each batch of :meth:`batches`, in the order they are visited."""
        _check_batch_size(batch_size)
        generator = shuffle_generator(seed, epoch) if shuffle else None
        return self._batch_rows(batch_size, generator, **options)

    def num_batches(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields."""
        _check_batch_size(batch_size)
        return math.ceil(len(self) / batch_size)

    def subset(self, indices) -> Self:
        """A corpus of the same kind (same vocabulary and name) of the rows at ``indices``, in
        that order: its row ``i`` is row ``indices[i]`` here.

        The subset is a corpus in its own right, so its batches' ``index`` numbers its own rows
        (``0 .. len(indices) - 1``), which is what a per-datum table fitted to the subset expects.

        >>> import torch
        >>> from fabula.data import synthetic_nvdm_corpus
        >>> data, _ = synthetic_nvdm_corpus(num_train=10, num_test=2, vocab_size=20)
        >>> picked = data["train"].subset([9, 3])
        >>> len(picked), picked.batch(torch.arange(2)).index  # numbered as its own rows
        (2, tensor([0, 1]))
        >>> torch.equal(picked.batch(torch.arange(2)).counts, data["train"].batch(torch.tensor([9, 3])).counts)
        True
        """
        if isinstance(indices, torch.Tensor) and indices.dtype == torch.bool:
            raise TypeError("subset takes row positions, not a boolean mask (use mask.nonzero().flatten())")
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.dim() != 1:
            raise ValueError(f"subset takes a 1-d list of row positions, got shape {tuple(index.shape)}")
        if index.numel() and not (0 <= int(index.min()) and int(index.max()) < len(self)):
            raise IndexError(f"row positions must lie in 0..{len(self) - 1}")
        return self._select(index)

    def shard(self, rank: int, world_size: int) -> Self:
        """The rows of ``rank`` out of ``world_size`` data-parallel workers: rows ``rank, rank +
        world_size, rank + 2 world_size, ...`` (see :meth:`subset`).

        The shards are disjoint, cover the corpus and differ in size by at most one row; taking
        every ``world_size``-th row rather than a block gives each rank a spread of the corpus
        even when its rows are grouped (by topic, source or length).
        """
        _check_rank(rank, world_size, len(self))
        return self.subset(torch.arange(rank, len(self), world_size))

    def data_parallel(self, rank: int, world_size: int) -> DataParallel:
        """Rank ``rank``'s part of every batch of ``world_size`` data-parallel workers
        (:class:`DataParallel`)."""
        return DataParallel(self, rank, world_size)


class DataParallel:
    r"""Rank ``rank``'s part of each batch of ``corpus`` for ``world_size`` data-parallel ranks.

    :meth:`batches` with batch size ``B`` cuts the global batches of ``world_size * B`` rows
    from the corpus's batch order exactly as ``corpus.batches(world_size * B, ...)`` would, and
    yields block ``rank`` of ``m // world_size`` rows of each global batch of ``m`` rows: the
    ranks' batches are disjoint, equally large, and together the global batch, so that averaging
    the ranks' mean gradients gives the global batch's (:mod:`fabula.distributed`). The last
    ``m mod world_size`` rows of a global batch (of the epoch's last, short one) are visited by
    no rank. Batches carry the corpus's row positions in ``index``.
    """

    def __init__(self, corpus: Corpus, rank: int, world_size: int):
        _check_rank(rank, world_size, len(corpus))
        self.corpus, self.rank, self.world_size = corpus, rank, world_size

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        device: torch.device | str = "cpu",
        **options,
    ) -> Iterator:
        """This rank's block of each global batch (class docstring); ``options`` as for
        :meth:`Corpus.batches`."""
        for rows in self.corpus.epoch_rows(batch_size * self.world_size, shuffle, seed, epoch, **options):
            share = len(rows) // self.world_size
            if share:
                yield self.corpus.batch(rows[self.rank * share : (self.rank + 1) * share], device)

    def num_batches(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields (on every rank)."""
        _check_batch_size(batch_size)
        global_size = batch_size * self.world_size
        full, last = divmod(len(self.corpus), global_size)
        return full + (last >= self.world_size)
