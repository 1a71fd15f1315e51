"""Sentence corpora (one sentence or document per line), their vocabulary, and padded batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fabula.data.corpus import Corpus, cut
from fabula.data.errors import DataFormatError
from fabula.data.files import INT64_MAX, abbreviate, numbered_lines, read_int
from fabula.data.vocab import Vocab, refuse_repeats
from fabula.errors import SettingsError

#: The ids of the special tokens, first in every :class:`TextVocab`.
PAD, BOS, EOS, UNK = 0, 1, 2, 3
#: The special tokens, in the order of their ids.
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
RESERVED = frozenset(SPECIALS[:UNK])  #: the markers a batch adds around and after each sentence


def refuse_reserved(tokens: Sequence[str], path: str | Path, line: int) -> None:
    """Raise a :class:`DataFormatError` at ``path``, ``line`` if a token is one of
    :data:`RESERVED`, which a sentence cannot hold (its id would end or pad it in a batch)."""
    if found := RESERVED.intersection(tokens):
        raise DataFormatError(path, f"token {min(found)!r} is reserved for the batches' markers", line)


class TextVocab(Vocab):
    """A vocabulary whose ids 0-3 are ``<pad> <bos> <eos> <unk>``.

    Tokens outside the vocabulary, and the corpus's own spelling of the unknown word
    (``unk_aliases``, e.g. PTB's ``<unk>`` or Yahoo's ``_UNK``), map to ``<unk>``.
    """

    def __init__(self, words: Sequence[str], unk_aliases: Iterable[str] = ("<unk>",)):
        super().__init__(words)
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError(f"a text vocabulary starts with {SPECIALS}, got {tuple(self.words[:4])}")
        self.unk_aliases = tuple(unk_aliases)

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        max_size: int | None = None,
        min_count: int = 1,
        unk_aliases: Iterable[str] = ("<unk>",),
    ) -> TextVocab:
        """The specials, then words by descending count (ties alphabetical), at most ``max_size`` in all."""
        aliases = tuple(unk_aliases)
        counts = Counter(
            tok for sent in sentences for tok in sent if tok not in aliases and tok not in SPECIALS
        )
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *words], aliases)

    @classmethod
    def from_indexed_file(cls, path: str | Path, unk: str = "_UNK") -> TextVocab:
        """Read ``TOKEN<TAB>INDEX`` lines (the Yahoo ``vocab.txt``), line k holding index k - 1,
        whose first four entries are ``<pad> <bos> <eos>`` and the unknown word ``unk``.

        A token is a non-empty word without whitespace (text is split at whitespace, so no other
        token could ever be looked up); an index is ASCII digits.
        """
        path = Path(path)
        expected = (*SPECIALS[:UNK], unk)
        words = []
        for n, line in numbered_lines(path, "vocabulary file"):
            token, sep, index = line.rstrip("\n").partition("\t")
            if not sep:
                raise DataFormatError(path, f"expected TOKEN<TAB>INDEX, got {abbreviate(line.rstrip())!r}", n)
            if token.split() != [token]:
                raise DataFormatError(path, f"token {abbreviate(token)!r} is empty or holds whitespace", n)
            if read_int(index, 0, INT64_MAX, path, n, "index") != n - 1:
                raise DataFormatError(path, f"index {abbreviate(index)} out of order (expected {n - 1})", n)
            if n <= len(expected) and token != expected[n - 1]:
                raise DataFormatError(
                    path, f"entry {n - 1} must be {expected[n - 1]!r}, got {abbreviate(token)!r}", n
                )
            words.append(token)
        if len(words) < len(expected):
            raise DataFormatError(path, f"{len(words)} entries, fewer than the four specials {expected}")
        refuse_repeats(words, path)
        if unk != SPECIALS[UNK] and SPECIALS[UNK] in words:
            raise DataFormatError(
                path,
                f"{SPECIALS[UNK]!r} names id {UNK}, which this file spells {unk!r}",
                words.index(SPECIALS[UNK]) + 1,
            )
        return cls([*SPECIALS, *words[4:]], unk_aliases=(unk,))

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Word ids; unknown words and the unknown-word aliases become ``<unk>``."""
        return [self.index.get(t, UNK) if t not in self.unk_aliases else UNK for t in tokens]

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``strip``, stop at ``<eos>`` and drop ``<bos>``/``<pad>``."""
        out = []
        for i in ids:
            i = int(i)
            if strip and i == EOS:
                break
            if strip and i in (PAD, BOS):
                continue
            out.append(self.words[i])
        return out


@dataclass
class TextBatch:
    """Padded sentences: ``tokens[b] = <bos> w_1 .. w_n <eos> <pad> ...``.

    ``lengths[b] = n + 1`` counts the predicted tokens (words and ``<eos>``). The decoder reads
    ``decoder_inputs`` (``tokens[:, :-1]``, which word dropout may replace) and predicts
    ``targets`` (``tokens[:, 1:]``) where ``mask`` is true.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    index: torch.Tensor
    decoder_inputs: torch.Tensor

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]

    @property
    def mask(self) -> torch.Tensor:
        steps = torch.arange(self.targets.shape[1], device=self.tokens.device)
        return steps < self.lengths[:, None]

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    def with_decoder_inputs(self, decoder_inputs: torch.Tensor) -> TextBatch:
        return replace(self, decoder_inputs=decoder_inputs)

    def to(self, device) -> TextBatch:
        return TextBatch(
            *(t.to(device) for t in (self.tokens, self.lengths, self.index, self.decoder_inputs))
        )

    @classmethod
    def from_ids(cls, sentences: Sequence[Sequence[int]], index=None) -> TextBatch:
        """Pad word-id sentences (without ``<bos>``/``<eos>``) into a batch."""
        lengths = torch.tensor([len(s) + 1 for s in sentences])
        tokens = torch.full((len(sentences), int(lengths.max()) + 1), PAD, dtype=torch.long)
        tokens[:, 0] = BOS
        for b, s in enumerate(sentences):
            tokens[b, 1 : len(s) + 1] = torch.as_tensor(list(s), dtype=torch.long)
            tokens[b, len(s) + 1] = EOS
        index = torch.arange(len(sentences)) if index is None else torch.as_tensor(index)
        return cls(tokens, lengths, index, tokens[:, :-1])


#: What a reader may do with a line longer than ``max_length``.
LONG_LINE_RULES = ("truncate", "drop", "error")
#: What a reader may do with an empty line.
EMPTY_LINE_RULES = ("skip", "error")


class TextCorpus(Corpus):
    """Sentences as word ids (no ``<bos>``/``<eos>``), batched by similar length:
    ``batches(..., pool=50)`` sorts pools of ``pool`` batches by length (see :meth:`_batch_rows`).

    :param sentences: word-id lists.
    :param vocab: the :class:`TextVocab` they index.

    Sentences of raw text, with a vocabulary built from them:

    >>> from fabula.data import TextCorpus, TextVocab
    >>> texts = ["the cat sat on the mat", "the dog sat", "a cat ran"]
    >>> vocab = TextVocab.build(text.split() for text in texts)
    >>> vocab.words  # the specials, then the words by descending count
    ['<pad>', '<bos>', '<eos>', '<unk>', 'the', 'cat', 'sat', 'a', 'dog', 'mat', 'on', 'ran']
    >>> corpus = TextCorpus([vocab.encode(text.split()) for text in texts], vocab)
    >>> len(corpus), corpus.num_tokens  # the words and one <eos> per sentence
    (3, 15)
    >>> batch = corpus.batch([0, 1])
    >>> batch.tokens  # <bos> words <eos>, then <pad>
    tensor([[ 1,  4,  5,  6, 10,  4,  9,  2],
            [ 1,  4,  8,  6,  2,  0,  0,  0]])
    >>> batch.lengths  # the tokens each sentence predicts
    tensor([7, 4])
    >>> vocab.decode(batch.tokens[1]), vocab.encode("the bird sat".split())  # an unknown word is <unk>
    (['the', 'dog', 'sat'], [4, 3, 6])
    """

    def __init__(self, sentences: Sequence[Sequence[int]], vocab: TextVocab, name: str = "corpus"):
        self.vocab, self.name = vocab, name
        self.lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])
        self.ids = torch.tensor([i for s in sentences for i in s], dtype=torch.long)
        if self.ids.numel() and int(self.ids.max()) >= len(vocab):
            raise DataFormatError(name, f"word id {int(self.ids.max())} >= vocabulary size {len(vocab)}")

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        """Predicted tokens: words plus one ``<eos>`` per sentence."""
        return int(self.lengths.sum()) + len(self)

    def sentence(self, i: int) -> list[int]:
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        vocab: TextVocab,
        max_length: int | None = None,
        long_lines: str = "truncate",
        empty_lines: str = "error",
    ) -> TextCorpus:
        """Read one whitespace-tokenised sentence per line (none may hold a :data:`RESERVED` token).

        Lines longer than ``max_length`` tokens are cut to their first ``max_length`` tokens
        (``long_lines="truncate"``), left out (``"drop"``) or refused (``"error"``). Empty lines
        are refused (``empty_lines="error"``) or left out (``"skip"``).
        """
        if long_lines not in LONG_LINE_RULES:
            raise SettingsError(f"long_lines must be one of {LONG_LINE_RULES}")
        if empty_lines not in EMPTY_LINE_RULES:
            raise SettingsError(f"empty_lines must be one of {EMPTY_LINE_RULES}")
        path = Path(path)
        sentences = []
        for n, line in numbered_lines(path, "text file"):
            tokens = line.split()
            refuse_reserved(tokens, path, n)
            if not tokens:
                if empty_lines == "error":
                    raise DataFormatError(path, "empty line (pass empty_lines='skip' to leave it out)", n)
                continue
            if max_length is not None and len(tokens) > max_length:
                if long_lines == "error":
                    raise DataFormatError(path, f"{len(tokens)} tokens > max_length {max_length}", n)
                if long_lines == "drop":
                    continue
                tokens = tokens[:max_length]
            sentences.append(vocab.encode(tokens))
        if not sentences:
            raise DataFormatError(path, "file has no sentences")
        return cls(sentences, vocab, name=str(path))

    def batch(self, index, device="cpu") -> TextBatch:
        index = torch.as_tensor(index, dtype=torch.long)
        return TextBatch.from_ids([self.sentence(int(i)) for i in index], index).to(device)

    def _select(self, index: torch.Tensor) -> TextCorpus:
        return TextCorpus([self.sentence(int(i)) for i in index], self.vocab, self.name)

    def _batch_rows(
        self, batch_size: int, generator: torch.Generator | None, pool: int = 50
    ) -> list[torch.Tensor]:
        """Batches of similar length, so that little of a batch is padding: the row order is cut
        into pools of ``pool`` batches, each pool sorted by length (stably) and split into
        batches, and with ``generator`` the batches are then shuffled by its next draw. Pools hold
        whole batches, so at most one batch is short and :meth:`num_batches` holds."""
        groups = []
        for chunk in cut(self._rows(generator), batch_size * pool):
            groups += cut(chunk[torch.argsort(self.lengths[chunk], stable=True)], batch_size)
        if generator is not None:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator)]
        return groups
