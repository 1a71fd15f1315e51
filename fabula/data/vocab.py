"""Vocabularies: an ordered list of word types with a content hash for checkpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from fabula.data.errors import DataFormatError
from fabula.data.files import INT64_MAX, abbreviate, numbered_lines, read_int


class Vocab:
    """An ordered vocabulary; word ``i`` has id ``i`` (0-based).

    ``sha256`` hashes the words in order, so a checkpoint can refuse data whose ids mean
    other words.
    """

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            seen: set[str] = set()
            dup = next(w for w in self.words if w in seen or seen.add(w))
            raise ValueError(f"vocabulary has the word {dup!r} twice")

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, i: int) -> str:
        return self.words[i]

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.words).encode("utf-8")).hexdigest()

    @classmethod
    def from_nvdm_file(cls, path: str | Path) -> Vocab:
        """Read an NVDM ``vocab.new``: one ``WORD COUNT`` entry per line (the count, a corpus
        frequency, is checked but not kept), line k is id k."""
        words = []
        for n, line in numbered_lines(path, "vocabulary file"):
            fields = line.split()
            if len(fields) != 2:
                raise DataFormatError(path, f"expected WORD COUNT, got {abbreviate(line.rstrip())!r}", n)
            read_int(fields[1], 0, INT64_MAX, path, n, "count")
            words.append(fields[0])
        if not words:
            raise DataFormatError(path, "vocabulary is empty")
        refuse_repeats(words, path)
        return cls(words)


def refuse_repeats(words: Sequence[str], path: str | Path) -> None:
    """Raise a :class:`DataFormatError` naming the line of the first word of file ``path`` (word
    ``i`` read from line ``i + 1``) that repeats an earlier one."""
    first: dict[str, int] = {}
    for n, word in enumerate(words, 1):
        if word in first:
            raise DataFormatError(
                path, f"the word {abbreviate(word)!r} appears twice (first on line {first[word]})", n
            )
        first[word] = n
