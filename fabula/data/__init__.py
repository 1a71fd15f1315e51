"""Corpora and batching."""

from fabula.data.bow import BagOfWords, BowBatch
from fabula.data.corpus import Corpus, shuffle_generator
from fabula.data.errors import DataFormatError
from fabula.data.registry import DATASETS, load_dataset, locate
from fabula.data.synthetic import random_nvdm, synthetic_nvdm_corpus
from fabula.data.text import TextBatch, TextCorpus, TextVocab
from fabula.data.user import DOCUMENTS, SENTENCES, Tokenization, read_corpus
from fabula.data.vectors import VectorBatch, Vectors
from fabula.data.vocab import Vocab

__all__ = [
    "BagOfWords",
    "BowBatch",
    "Corpus",
    "DataFormatError",
    "DATASETS",
    "DOCUMENTS",
    "SENTENCES",
    "TextBatch",
    "TextCorpus",
    "TextVocab",
    "Tokenization",
    "VectorBatch",
    "Vectors",
    "Vocab",
    "load_dataset",
    "locate",
    "random_nvdm",
    "read_corpus",
    "shuffle_generator",
    "synthetic_nvdm_corpus",
]
