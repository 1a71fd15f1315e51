"""Vocabularies: an ordered list of word types with a content hash for checkpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from fabula.data.errors import DataFormatError
from fabula.data.files import numbered_lines


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
        """Read an NVDM ``vocab.new``: one ``WORD COUNT`` entry per line, line k is id k."""
        words = []
        for n, line in numbered_lines(path, "vocabulary file"):
            fields = line.split()
            if not fields:
                raise DataFormatError(path, "empty vocabulary entry", n)
            words.append(fields[0])
        if not words:
            raise DataFormatError(path, "vocabulary is empty")
        try:
            return cls(words)
        except ValueError as e:
            raise DataFormatError(path, str(e)) from None
