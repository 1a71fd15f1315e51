import dataclasses

import pytest
import torch

from fabula.data import BagOfWords, Corpus, Vectors, synthetic_nvdm_corpus
from fabula.data.text import SPECIALS, TextCorpus, TextVocab

KINDS = ("bow", "text", "vectors")


def make(kind: str) -> Corpus:
    """A small corpus of each kind, of a prime size so that the last batch is short."""
    gen = torch.Generator().manual_seed(0)
    if kind == "bow":
        splits, _ = synthetic_nvdm_corpus(
            num_train=53, num_test=5, vocab_size=20, latent_dim=2, mean_length=12
        )
        return splits["train"]
    if kind == "text":
        vocab = TextVocab([*SPECIALS, *(f"w{i}" for i in range(12))])
        lengths = torch.randint(1, 15, (61,), generator=gen).tolist()
        return TextCorpus([torch.randint(4, 16, (n,), generator=gen).tolist() for n in lengths], vocab, "toy")
    return Vectors(torch.randn(47, 3, generator=gen))


def fields(batch) -> dict[str, torch.Tensor]:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


def assert_same_batch(a, b, index=True):
    fa, fb = fields(a), fields(b)
    if not index:
        del fa["index"], fb["index"]
    assert fa.keys() == fb.keys()
    for name in fa:
        assert torch.equal(fa[name], fb[name]), name


def pooled(corpus: TextCorpus, rows: torch.Tensor, batch_size: int, pool: int) -> list[torch.Tensor]:
    """Today's grouping of ``rows`` into batches of similar length, before the batches are shuffled."""
    groups = []
    for start in range(0, len(rows), batch_size * pool):
        chunk = rows[start : start + batch_size * pool]
        chunk = chunk[torch.argsort(corpus.lengths[chunk], stable=True)]
        groups.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return groups


def old_loop(corpus: Corpus, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The row indices that the batching loops before :class:`Corpus` yielded with
    ``shuffle=True, seed=seed`` (``TextCorpus`` with its default pool of 50)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(corpus), generator=gen)
    if isinstance(corpus, TextCorpus):
        groups = pooled(corpus, order, batch_size, 50)
        return [groups[i] for i in torch.randperm(len(groups), generator=gen)]
    return [order[start : start + batch_size] for start in range(0, len(corpus), batch_size)]


@pytest.mark.parametrize("kind", KINDS)
def test_order_is_a_permutation_that_depends_on_seed_and_epoch_only(kind):
    corpus = make(kind)
    order = corpus.order(3, 1)
    assert order.dtype == torch.long
    assert torch.equal(order.sort().values, torch.arange(len(corpus)))
    torch.manual_seed(123)
    list(corpus.batches(8, shuffle=True, seed=9, epoch=4))
    assert torch.equal(corpus.order(3, 1), order)
    assert not torch.equal(corpus.order(3, 2), order)
    assert not torch.equal(corpus.order(4, 1), order)


@pytest.mark.parametrize("kind", ["bow", "vectors"])
@pytest.mark.parametrize("batch_size", [1, 8, 100])
def test_shuffled_batches_are_cut_from_the_order(kind, batch_size):
    corpus = make(kind)
    batches = list(corpus.batches(batch_size, shuffle=True, seed=5, epoch=2))
    expected = corpus.order(5, 2).split(batch_size)
    assert len(batches) == len(expected)
    for batch, rows in zip(batches, expected, strict=True):
        assert_same_batch(batch, corpus.batch(rows))
    plain = [b.index for b in corpus.batches(batch_size)]
    assert [r.tolist() for r in plain] == [r.tolist() for r in torch.arange(len(corpus)).split(batch_size)]


@pytest.mark.parametrize("pool", [1, 2, 50])
def test_shuffled_text_batches_are_the_length_pools_of_the_order(pool):
    corpus = make("text")
    batches = [tuple(b.index.tolist()) for b in corpus.batches(4, shuffle=True, seed=5, epoch=2, pool=pool)]
    expected = [tuple(rows.tolist()) for rows in pooled(corpus, corpus.order(5, 2), 4, pool)]
    assert len(batches) == len(expected) and set(batches) == set(expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed, epoch", [(0, 0), (3, 1), (3, 7), (11, 2)])
def test_shuffled_batches_equal_those_of_the_loop_they_replace(kind, seed, epoch):
    # the training loop passed seed=seed * 1_000_003 + epoch to the old loops
    corpus = make(kind)
    for batch_size in (1, 8, 16):
        batches = list(corpus.batches(batch_size, shuffle=True, seed=seed, epoch=epoch))
        expected = old_loop(corpus, batch_size, seed * 1_000_003 + epoch)
        assert len(batches) == len(expected)
        for batch, rows in zip(batches, expected, strict=True):
            assert_same_batch(batch, corpus.batch(rows))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_num_batches_matches_the_iterator(kind, shuffle):
    corpus = make(kind)
    for batch_size in (1, 2, 7, len(corpus), len(corpus) + 5):
        batches = list(corpus.batches(batch_size, shuffle=shuffle, seed=1, epoch=3))
        assert len(batches) == corpus.num_batches(batch_size)
        assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(len(corpus)))
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        corpus.num_batches(0)


def test_text_num_batches_matches_small_pools():
    corpus = make("text")
    for batch_size in (3, 7):
        assert len(list(corpus.batches(batch_size, shuffle=True, pool=2))) == corpus.num_batches(batch_size)


@pytest.mark.parametrize("kind", KINDS)
def test_subset_holds_the_rows_numbered_from_zero(kind):
    corpus = make(kind)
    rows = [5, 2, 9, 2]
    part = corpus.subset(rows)
    assert type(part) is type(corpus) and len(part) == len(rows)
    if kind != "vectors":
        assert part.vocab is corpus.vocab and part.name == corpus.name
    batch = part.batch(torch.arange(len(rows)))
    assert batch.index.tolist() == [0, 1, 2, 3]
    assert_same_batch(batch, corpus.batch(torch.tensor(rows)), index=False)
    assert sorted(torch.cat([b.index for b in part.batches(3, shuffle=True)]).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", KINDS)
def test_subset_refuses_bad_positions(kind):
    corpus = make(kind)
    with pytest.raises(IndexError, match="row positions must lie in 0.."):
        corpus.subset([0, len(corpus)])
    with pytest.raises(IndexError):
        corpus.subset([-1])
    with pytest.raises(ValueError, match="1-d"):
        corpus.subset([[0, 1]])
    with pytest.raises(TypeError, match="mask"):
        corpus.subset(torch.ones(len(corpus), dtype=torch.bool))
    empty = corpus.subset([])
    assert len(empty) == 0 and empty.num_batches(4) == 0 and list(empty.batches(4, shuffle=True)) == []


def test_bag_of_words_subset_keeps_labels_and_coefficients():
    corpus = make("bow")
    corpus = BagOfWords(corpus.indptr, corpus.ids, corpus.counts, corpus.vocab, torch.arange(len(corpus)) % 3)
    part = corpus.subset([7, 0, 4])
    assert part.labels.tolist() == [1, 0, 1]
    assert torch.equal(part.lengths, corpus.lengths[[7, 0, 4]])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_covering_balanced_and_deterministic(kind, world_size):
    corpus = make(kind)
    n = len(corpus)
    shards = [corpus.shard(rank, world_size) for rank in range(world_size)]
    sizes = [len(s) for s in shards]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    rows = [torch.arange(rank, n, world_size) for rank in range(world_size)]
    assert sorted(torch.cat(rows).tolist()) == list(range(n))
    for rank, (shard, own) in enumerate(zip(shards, rows, strict=True)):
        assert type(shard) is type(corpus)
        everything = shard.batch(torch.arange(len(shard)))
        assert_same_batch(everything, corpus.batch(own), index=False)
        assert_same_batch(corpus.shard(rank, world_size).batch(torch.arange(len(shard))), everything)


@pytest.mark.parametrize(
    "rank, world_size, message",
    [
        (0, 0, "world_size must be at least 1"),
        (-1, 2, r"rank must lie in 0\.\.1"),
        (2, 2, r"rank must lie in 0\.\.1"),
        (0, 1000, "cannot be shared among 1000 ranks"),
    ],
)
def test_shard_refuses_bad_ranks(rank, world_size, message):
    with pytest.raises(ValueError, match=message):
        make("vectors").shard(rank, world_size)
