"""Bag-of-words corpora in the NVDM feature format, batched to dense count tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fabula.data.corpus import Corpus
from fabula.data.errors import DataFormatError
from fabula.data.files import INT64_MAX, INT64_MIN, abbreviate, numbered_lines, read_int
from fabula.data.vocab import Vocab

MAX_COUNT = 2**24
"""The largest count (and document length) a :class:`BagOfWords` holds: float32 stores every
integer exactly up to :math:`2^{24}` = 16,777,216, and :math:`2^{24} + 1` not."""
_COUNT_NOTE = " (counts are stored as float32, exact up to 2^24 = 16,777,216)"


@dataclass
class BowBatch:
    """A batch of documents as dense counts.

    ``counts[b, v]`` is how often word ``v`` occurs in document ``b``; ``index[b]`` is the
    document's position in its corpus.
    """

    counts: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor

    @property
    def inputs(self) -> torch.Tensor:
        """What an encoder reads: the count vectors."""
        return self.counts

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens per document, :math:`N_b`."""
        return self.counts.sum(-1)

    @property
    def size(self) -> int:
        return self.counts.shape[0]

    def to(self, device: torch.device | str) -> BowBatch:
        return BowBatch(*(t.to(device) for t in (self.counts, self.index, self.labels)))


class BagOfWords(Corpus):
    """A corpus of documents stored sparsely (CSR: ``indptr``, ``ids``, ``counts``).

    Word ids are 0-based here; the NVDM files are 1-based and are shifted on reading.
    """

    def __init__(
        self,
        indptr: torch.Tensor,
        ids: torch.Tensor,
        counts: torch.Tensor,
        vocab: Vocab,
        labels: torch.Tensor | None = None,
        name: str = "corpus",
    ):
        self.indptr = indptr.long()
        self.ids = ids.long()
        self.counts = counts.float()
        self.vocab = vocab
        self.name = name
        n = len(self.indptr) - 1
        self.labels = labels.long() if labels is not None else torch.zeros(n, dtype=torch.long)
        if self.ids.numel() and int(self.ids.max()) >= len(vocab):
            raise DataFormatError(name, f"word id {int(self.ids.max())} >= vocabulary size {len(vocab)}")
        rows = torch.repeat_interleave(torch.arange(n), self.indptr.diff())
        counts64 = self.counts.double()
        lengths = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, counts64)
        self.lengths = lengths.float()

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum(dtype=torch.float64))

    def log_unigram(self) -> torch.Tensor:
        """``[V]``: the add-one smoothed log unigram frequencies of the corpus's words, the
        background word distribution from which the bag-of-words stories start."""
        freq = torch.ones(len(self.vocab)).index_add_(0, self.ids, self.counts)
        return (freq / freq.sum()).log()

    @classmethod
    def from_dense(cls, counts: torch.Tensor, vocab: Vocab, labels=None, name="corpus") -> BagOfWords:
        """Build a corpus from a ``[num_docs, vocab_size]`` count matrix.

        >>> import torch
        >>> from fabula.data import BagOfWords, Vocab
        >>> counts = torch.tensor([[1.0, 0, 1, 2], [0, 1, 1, 1]])  # "the cat sat the", "the dog sat"
        >>> corpus = BagOfWords.from_dense(counts, Vocab(["cat", "dog", "sat", "the"]))
        >>> len(corpus), corpus.num_tokens, corpus.lengths
        (2, 7, tensor([4., 3.]))
        >>> batch = corpus.batch(torch.tensor([1]))
        >>> batch.counts, batch.lengths, batch.index
        (tensor([[0., 1., 1., 1.]]), tensor([3.]), tensor([1]))
        >>> BagOfWords.from_dense(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]), corpus.vocab)
        Traceback (most recent call last):
            ...
        fabula.data.errors.DataFormatError: corpus: document 1 is empty
        """
        if counts.shape[-1] != len(vocab):
            raise ValueError(
                f"counts have {counts.shape[-1]} columns but the vocabulary has {len(vocab)} words"
            )
        nz = counts.nonzero(as_tuple=True)
        per_doc = torch.bincount(nz[0], minlength=counts.shape[0])
        if (per_doc == 0).any():
            raise DataFormatError(name, f"document {int((per_doc == 0).nonzero()[0])} is empty")
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), per_doc.cumsum(0)])
        return cls(indptr, nz[1], counts[nz], vocab, labels, name)

    @classmethod
    def from_nvdm_file(cls, path: str | Path, vocab: Vocab) -> BagOfWords:
        """Read an NVDM ``.feat`` file: one document per line, ``LABEL ID:COUNT ...``, 1-based ids.

        Labels are 64-bit integers. Counts, and a document's total, are at most
        :data:`MAX_COUNT` (:math:`2^{24}`): they are stored as float32, the dtype of the batches
        that stories read, which holds every integer exactly up to that bound and no further.
        Every malformed line raises :class:`DataFormatError` naming the file, line and problem.
        """
        path = Path(path)
        V = len(vocab)
        indptr, ids, counts, labels = [0], [], [], []
        for n, line in numbered_lines(path, "feature file"):
            fields = line.split()
            if not fields:
                raise DataFormatError(path, "empty line (a document needs a label and words)", n)
            labels.append(
                read_int(fields[0], INT64_MIN, INT64_MAX, path, n, "label", note=" (64-bit integers)")
            )
            if len(fields) == 1:
                raise DataFormatError(path, "empty document (a label and no words)", n)
            seen = set()
            length = 0
            for tok in fields[1:]:
                word, sep, count = tok.partition(":")
                if not sep:
                    raise DataFormatError(path, f"token {abbreviate(tok)!r} is not of the form ID:COUNT", n)
                context = f" in {abbreviate(tok)!r}"
                i = read_int(word, 1, V, path, n, "word id", context, f" (vocabulary size {V})")
                if i in seen:
                    raise DataFormatError(path, f"word id {i} appears twice", n)
                seen.add(i)
                c = read_int(count, 1, MAX_COUNT, path, n, "count", context, _COUNT_NOTE)
                length += c
                ids.append(i - 1)
                counts.append(c)
            if length > MAX_COUNT:
                raise DataFormatError(path, f"document of {length} tokens > {MAX_COUNT}{_COUNT_NOTE}", n)
            indptr.append(len(ids))
        if len(indptr) == 1:
            raise DataFormatError(path, "file has no documents")
        return cls(
            torch.tensor(indptr),
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(counts, dtype=torch.float32),
            vocab,
            torch.tensor(labels, dtype=torch.long),
            name=str(path),
        )

    def _entries(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the documents at ``index``: each stored entry's position in ``index`` and its
        position in ``ids``/``counts``, documents in the order of ``index``."""
        starts, ends = self.indptr[index], self.indptr[index + 1]
        lens = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(index)), lens)
        first = torch.cumsum(lens, 0) - lens
        pos = torch.arange(int(lens.sum())) - torch.repeat_interleave(first, lens)
        pos += torch.repeat_interleave(starts, lens)
        return rows, pos

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu") -> BowBatch:
        """The documents at ``index`` as a dense :class:`BowBatch` on ``device``."""
        index = torch.as_tensor(index, dtype=torch.long)
        rows, pos = self._entries(index)
        dense = torch.zeros(len(index), len(self.vocab))
        dense[rows, self.ids[pos]] = self.counts[pos]
        return BowBatch(dense, index, self.labels[index]).to(device)

    def _select(self, index: torch.Tensor) -> BagOfWords:
        _, pos = self._entries(index)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), self.indptr.diff()[index].cumsum(0)])
        return BagOfWords(indptr, self.ids[pos], self.counts[pos], self.vocab, self.labels[index], self.name)
