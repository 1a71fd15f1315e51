"""Bag-of-words corpora in the NVDM feature format, batched to dense count tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fabula.data.corpus import Corpus
from fabula.data.errors import DataFormatError
from fabula.data.files import numbered_lines
from fabula.data.vocab import Vocab


@dataclass
class BowBatch:
    """A batch of documents as dense counts.

    ``counts[b, v]`` is how often word ``v`` occurs in document ``b``; ``log_coef[b]`` is the
    multinomial coefficient :math:`\\log N_b! - \\sum_v \\log x_{bv}!`, computed once per corpus so
    that likelihoods need not take ``lgamma`` of a vocabulary-sized tensor each step;
    ``index[b]`` is the document's position in its corpus.
    """

    counts: torch.Tensor
    log_coef: torch.Tensor
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
        return BowBatch(*(t.to(device) for t in (self.counts, self.log_coef, self.index, self.labels)))


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
        lgamma_sum = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, torch.lgamma(counts64 + 1))
        self.lengths = lengths.float()
        self.log_coef = (torch.lgamma(lengths + 1) - lgamma_sum).float()

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_dense(cls, counts: torch.Tensor, vocab: Vocab, labels=None, name="corpus") -> BagOfWords:
        """Build a corpus from a ``[num_docs, vocab_size]`` count matrix."""
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

        Every malformed line raises :class:`DataFormatError` naming the file, line and problem.
        """
        path = Path(path)
        V = len(vocab)
        indptr, ids, counts, labels = [0], [], [], []
        for n, line in numbered_lines(path, "feature file"):
            fields = line.split()
            if not fields:
                raise DataFormatError(path, "empty line (a document needs a label and words)", n)
            try:
                labels.append(int(fields[0]))
            except ValueError:
                raise DataFormatError(path, f"label {fields[0]!r} is not an integer", n) from None
            if len(fields) == 1:
                raise DataFormatError(path, "empty document (a label and no words)", n)
            seen = set()
            for tok in fields[1:]:
                word, sep, count = tok.partition(":")
                if not sep:
                    raise DataFormatError(path, f"token {tok!r} is not of the form ID:COUNT", n)
                try:
                    i = int(word)
                except ValueError:
                    raise DataFormatError(path, f"word id {word!r} in {tok!r} is not an integer", n) from None
                if not 1 <= i <= V:
                    raise DataFormatError(path, f"word id {i} out of range 1..{V} (vocabulary size {V})", n)
                if i in seen:
                    raise DataFormatError(path, f"word id {i} appears twice", n)
                seen.add(i)
                try:
                    c = int(count)
                except ValueError:
                    raise DataFormatError(path, f"count {count!r} in {tok!r} is not an integer", n) from None
                if c <= 0:
                    raise DataFormatError(path, f"count {c} in {tok!r} is not positive", n)
                ids.append(i - 1)
                counts.append(c)
            indptr.append(len(ids))
        if len(indptr) == 1:
            raise DataFormatError(path, "file has no documents")
        return cls(
            torch.tensor(indptr),
            torch.tensor(ids),
            torch.tensor(counts, dtype=torch.float32),
            vocab,
            torch.tensor(labels),
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
        return BowBatch(dense, self.log_coef[index], index, self.labels[index]).to(device)

    def _select(self, index: torch.Tensor) -> BagOfWords:
        _, pos = self._entries(index)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), self.indptr.diff()[index].cumsum(0)])
        return BagOfWords(indptr, self.ids[pos], self.counts[pos], self.vocab, self.labels[index], self.name)
