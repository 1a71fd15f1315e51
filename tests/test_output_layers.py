"""The output layers p(w | h) of fabula.nn.output: each normalised and equal to its defining formula
written out here from the layer's parameters, class binning, the sampled-softmax estimate and its
gradient, KerBS's sense reallocation, and the layers' wiring into decoders, stories, the numpyro
backend, CGMH and training runs."""

import math

import pytest
import torch
from test_cgmh import STATES, transition_matrix

from fabula.cli import _train_config, main, parser
from fabula.data.text import EOS, TextBatch, TextCorpus, TextVocab
from fabula.errors import SettingsError, UsageError
from fabula.inference.sequence_mh import SequenceMH
from fabula.models import GMVAE, LSTMVAE, RNNLM
from fabula.models.constrained import ConstrainedSentences, padded
from fabula.nn import LSTMDecoder
from fabula.nn.output import (
    OUTPUT_LAYERS,
    ClassFactoredSoftmax,
    KernelizedBayesianSoftmax,
    output_layer,
    parse_output,
)

V, H = 23, 8

#: A small instance of every registered layer (KerBS without automatic reallocation).
SPECS = {
    "full": "full",
    "class": "class:4",
    "adaptive": "adaptive:cutoffs=4/10,div=2",
    "sampled": "sampled:5",
    "mos": "mos:3",
    "kerbs": "kerbs:2,reallocate_every=0",
}


def skewed_counts(vocab_size=V, seed=11) -> torch.Tensor:
    """Zipf-like counts ``[vocab_size]`` assigned to a random permutation of the ids, so that
    frequency ranks differ from ids (with a tie, to exercise tie-breaking)."""
    g = torch.Generator().manual_seed(seed)
    by_rank = torch.tensor([round(1000 / (r + 1)) for r in range(vocab_size)], dtype=torch.float32)
    by_rank[-1] = by_rank[-2]  # a tie
    counts = torch.empty(vocab_size)
    counts[torch.randperm(vocab_size, generator=g)] = by_rank
    return counts


COUNTS = skewed_counts()


def make_layer(name: str, dtype=torch.float64, seed=0):
    """``SPECS[name]`` fitted to :data:`COUNTS`, in ``dtype``, in eval mode, with KerBS's kernel
    sharpness spread over a range (it starts at 0)."""
    torch.manual_seed(seed)
    layer = output_layer(SPECS[name], H, V).to(dtype)
    layer.fit_frequencies(COUNTS)
    if isinstance(layer, KernelizedBayesianSoftmax):
        with torch.no_grad():
            layer.sharpness.uniform_(-1.0, 1.0)
    return layer.eval()


def lse(values) -> float:
    """log sum exp of a list of floats, plainly."""
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_softmax_list(values) -> list[float]:
    z = lse(values)
    return [v - z for v in values]


def test_every_registered_layer_is_covered():
    assert set(SPECS) == set(OUTPUT_LAYERS)
    for name, spec in SPECS.items():
        assert type(output_layer(spec, H, V)) is OUTPUT_LAYERS[name].layer


# -- 1. normalised, and log_prob is log_probs at the targets ------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", SPECS)
@torch.no_grad()
def test_log_probs_sum_to_one_and_log_prob_gathers_them(name, dtype):
    layer = make_layer(name, dtype)
    atol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.manual_seed(1)
    h = 2 * torch.randn(2, 3, H, dtype=dtype)
    lp = layer.log_probs(h)
    assert lp.shape == (2, 3, V) and lp.dtype == dtype
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 3, dtype=dtype), atol=atol)
    targets = torch.tensor([[0, 7, 22], [13, 4, 4]])
    got = layer.log_prob(h, targets)
    assert got.shape == (2, 3)
    assert torch.allclose(got, lp.gather(-1, targets[..., None]).squeeze(-1), atol=atol)
    # every word as a target, in a scrambled order (every class, cluster and sense group)
    h_all = torch.randn(2, V, H, dtype=dtype)
    every = torch.stack([torch.randperm(V), torch.randperm(V)])
    want = layer.log_probs(h_all).gather(-1, every[..., None]).squeeze(-1)
    assert torch.allclose(layer.log_prob(h_all, every), want, atol=atol)


# -- 2. each layer against its formula written out from its parameters ---------------------------


def full_reference(layer, h):
    out = []
    for row in h:
        logits = (layer.weight @ row + layer.bias).tolist()
        out.append(log_softmax_list(logits))
    return out


def class_reference(layer, h):
    class_of = layer.class_of.tolist()
    members = {c: [w for w in range(V) if class_of[w] == c] for c in range(layer.num_classes)}
    out = []
    for row in h:
        class_lp = log_softmax_list((layer.classes.weight @ row + layer.classes.bias).tolist())
        word_logits = (layer.words.weight @ row + layer.words.bias).tolist()
        out.append(
            [
                class_lp[class_of[w]] + word_logits[w] - lse([word_logits[v] for v in members[class_of[w]]])
                for w in range(V)
            ]
        )
    return out


def adaptive_reference(layer, h):
    """Grave et al.'s head and tail clusters written out over frequency ranks, then read by id."""
    torch_layer = layer.layer
    bounds = [*layer.cutoffs, V]
    rank = layer.rank.tolist()
    out = []
    for row in h:
        head = log_softmax_list((torch_layer.head.weight @ row).tolist())
        by_rank = head[: bounds[0]]
        for i, tail in enumerate(torch_layer.tail):
            projected = tail[0].weight @ row
            assert len(projected) == H // 2 ** (i + 1)  # div=2
            cluster = log_softmax_list((tail[1].weight @ projected).tolist())
            assert len(cluster) == bounds[i + 1] - bounds[i]
            by_rank += [head[bounds[0] + i] + lp for lp in cluster]
        out.append([by_rank[rank[w]] for w in range(V)])
    return out


def mos_reference(layer, h):
    K = layer.components
    P = layer.prior.weight
    U, c = layer.latent.weight, layer.latent.bias
    out = []
    for row in h:
        pi = [math.exp(v) for v in log_softmax_list((P @ row).tolist())]
        p = [0.0] * V
        for k in range(K):
            g = torch.tanh(U[k * H : (k + 1) * H] @ row + c[k * H : (k + 1) * H])
            logits = (layer.linear.weight @ g + layer.linear.bias).tolist()
            z = sum(math.exp(v) for v in logits)
            for w in range(V):
                p[w] += pi[k] * math.exp(logits[w]) / z
        out.append([math.log(v) for v in p])
    return out


def kerbs_reference(layer, h):
    """The kernel of the class docstring, sense by sense."""
    word_of = layer.word_of.tolist()
    out = []
    for row in h:
        h_norm = math.sqrt(sum(x * x for x in row.tolist()))
        kernels = []
        for s in range(len(word_of)):
            e = layer.embedding[s]
            e_norm = math.sqrt(sum(x * x for x in e.tolist()))
            dot = float(row @ e)
            cos = dot / (h_norm * e_norm)
            theta = math.exp(float(layer.sharpness[s]))
            a = 1 / (4 * ((math.exp(theta) - 1) / theta - 1))
            if cos > 0:
                kernels.append(2 * a * h_norm * e_norm * (math.exp(theta * cos) - 1))
            else:
                kernels.append(h_norm * e_norm * cos)
        total = lse(kernels)
        out.append(
            [lse([kernels[s] for s in range(len(word_of)) if word_of[s] == w]) - total for w in range(V)]
        )
    return out


REFERENCES = {
    "full": full_reference,
    "class": class_reference,
    "adaptive": adaptive_reference,
    "sampled": full_reference,  # evaluated exactly: the full softmax
    "mos": mos_reference,
    "kerbs": kerbs_reference,
}


@pytest.mark.parametrize("name", SPECS)
@torch.no_grad()
def test_each_layer_equals_its_formula_written_out(name):
    layer = make_layer(name)
    if name == "kerbs":  # an uneven allocation: words with 1, 2 and 4 senses
        layer.word_of[[0, 1, 2]] = torch.tensor([5, 5, 9])
        assert sorted(set(torch.bincount(layer.word_of, minlength=V).tolist())) == [1, 2, 3, 4]
    torch.manual_seed(2)
    h = 2 * torch.randn(6, H, dtype=torch.float64)
    want = torch.tensor(REFERENCES[name](layer, h), dtype=torch.float64)
    assert torch.allclose(layer.log_probs(h), want, atol=1e-9)
    targets = torch.tensor([0, 5, 9, 22, 17, 3])
    assert torch.allclose(layer.log_prob(h, targets), want[torch.arange(6), targets], atol=1e-9)


@torch.no_grad()
def test_adaptive_is_torchs_adaptive_softmax_over_frequency_ranks():
    layer = make_layer("adaptive")
    rank = layer.rank
    assert sorted(rank.tolist()) == list(range(V))
    by_rank = torch.argsort(rank)  # word id at each rank
    ordered = COUNTS[by_rank].tolist()
    assert all(a >= b for a, b in zip(ordered, ordered[1:], strict=False))  # descending count
    assert int(by_rank[0]) == int(COUNTS.argmax())
    tied = [w for w in range(V) if COUNTS[w] == COUNTS.min()]
    assert rank[tied[0]] < rank[tied[1]]  # ties by id
    torch.manual_seed(3)
    h = torch.randn(5, H, dtype=torch.float64)
    torch_lp = layer.layer.log_prob(h)
    want = torch.stack([torch_lp[:, int(rank[w])] for w in range(V)], 1)
    assert torch.allclose(layer.log_probs(h), want, atol=1e-12)


# -- 3. class binning ---------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 4, 6])
def test_frequency_classes_are_non_empty_contiguous_and_the_top_word_is_alone(classes):
    g = torch.Generator().manual_seed(classes)
    counts = torch.randint(1, 30, (V,), generator=g).float()
    top = 7
    counts[top] = 0
    counts[top] = counts.sum() + V  # over half of all tokens, each word's count taken plus one
    layer = output_layer(f"class:{classes}", H, V)
    layer.fit_frequencies(counts)
    class_of = layer.class_of.tolist()
    sizes = [class_of.count(c) for c in range(classes)]
    assert all(n > 0 for n in sizes), sizes
    assert set(class_of) == set(range(classes))
    for i in range(V):
        for j in range(V):
            if counts[i] > counts[j]:
                assert class_of[i] <= class_of[j], (i, j, class_of)
    in_rank_order = [class_of[w] for w in sorted(range(V), key=lambda w: (-float(counts[w]), w))]
    assert in_rank_order == sorted(in_rank_order)
    assert all(b - a <= 1 for a, b in zip(in_rank_order, in_rank_order[1:], strict=False))  # none skipped
    assert class_of[top] == 0 and sizes[0] == 1


def test_more_classes_than_words_are_refused():
    with pytest.raises(SettingsError, match="at most as many classes as words"):
        output_layer(f"class:{V + 1}", H, V)


# -- 4. sampled softmax -------------------------------------------------------------------------


def sampled_setup():
    layer = make_layer("sampled")
    torch.manual_seed(4)
    h = torch.randn(2, 3, H, dtype=torch.float64)
    targets = torch.tensor([[5, 0, 11], [1, 5, 22]])  # 5, 0 and 1 are also drawn: accidental hits
    negatives = torch.tensor([5, 1, 1, 9, 0])  # 1 drawn twice
    return layer, h, targets, negatives


def sampled_reference(layer, h, targets, negatives):
    """``(estimates, dloss/do)`` of loss = -sum of the estimates, written out row by row: the
    corrected logits o_j - log(S Q(j)), accidental hits left out, and the softmax gradient."""
    S = len(negatives)
    log_q = layer.proposal().tolist()
    values, grads = [], torch.zeros(len(targets), V, dtype=torch.float64)
    for r, (row, t) in enumerate(zip(h, targets.tolist(), strict=True)):
        o = (layer.weight @ row + layer.bias).tolist()
        kept = [j for j in negatives.tolist() if j != t]
        corrected = [o[j] - math.log(S) - log_q[j] for j in [t, *kept]]
        z = lse(corrected)
        values.append(corrected[0] - z)
        p = [math.exp(c - z) for c in corrected]
        grads[r, t] += -(1 - p[0])
        for j, pj in zip(kept, p[1:], strict=True):
            grads[r, j] += pj
    return torch.tensor(values, dtype=torch.float64), grads


def test_the_sampled_estimate_and_its_gradient_are_jean_et_als():
    layer, h, targets, negatives = sampled_setup()
    layer.train()
    estimate = layer.training_log_prob(h, targets, negatives=negatives)
    want, dlogits = sampled_reference(layer, h.reshape(-1, H), targets.reshape(-1), negatives)
    assert estimate.shape == (2, 3)
    assert torch.allclose(estimate.reshape(-1), want, atol=1e-12)
    exact = layer.log_prob(h, targets)
    assert (estimate - exact).abs().max() > 1e-3  # an estimate, not the exact value
    (-estimate.sum()).backward()
    flat = h.reshape(-1, H)
    assert torch.allclose(layer.weight.grad, dlogits.T @ flat, atol=1e-12)
    assert torch.allclose(layer.bias.grad, dlogits.sum(0), atol=1e-12)
    untouched = [
        w for w in range(V) if w not in targets.tolist()[0] + targets.tolist()[1] + negatives.tolist()
    ]
    assert (layer.weight.grad[untouched] == 0).all()  # only the target and drawn rows move


def test_the_sampled_layer_is_exact_in_eval_mode_and_without_gradients():
    layer, h, targets, negatives = sampled_setup()
    exact = torch.tensor(full_reference(layer, h.reshape(-1, H)), dtype=torch.float64)
    want = exact[torch.arange(6), targets.reshape(-1)].reshape(2, 3)
    layer.eval()
    assert torch.allclose(layer.training_log_prob(h, targets, negatives=negatives), want, atol=1e-12)
    layer.train()
    with torch.no_grad():
        assert torch.allclose(layer.training_log_prob(h, targets, negatives=negatives), want, atol=1e-12)
    assert torch.allclose(layer.log_prob(h, targets), want, atol=1e-12)  # log_prob: exact in training too
    assert torch.allclose(layer.log_probs(h).exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))


def test_the_sampled_proposal_is_the_documented_log_uniform_over_frequency_ranks():
    """Q(r) = log((r + 2) / (r + 1)) / log(V + 1) of each word's frequency rank r: a distribution,
    and what the negatives are drawn from."""
    layer = make_layer("sampled")
    rank = torch.empty(V, dtype=torch.long)
    rank[torch.sort(-COUNTS, stable=True).indices] = torch.arange(V)
    want = [math.log((int(r) + 2) / (int(r) + 1)) / math.log(V + 1) for r in rank]
    assert sum(want) == pytest.approx(1.0)
    q = layer.proposal().double().exp()
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(q, torch.tensor(want, dtype=torch.float64), atol=1e-5)
    torch.manual_seed(5)
    layer.negatives = 100_000
    drawn = layer.draw_negatives()
    assert drawn.shape == (100_000,) and 0 <= int(drawn.min()) and int(drawn.max()) < V
    frequency = torch.bincount(drawn, minlength=V).double() / len(drawn)
    assert (frequency - torch.tensor(want, dtype=torch.float64)).abs().max() < 0.01


# -- 5. KerBS's sense reallocation --------------------------------------------------------------


def feed(layer, words, calls, seed):
    """``calls`` training-mode log_prob calls whose targets are drawn from ``words``."""
    g = torch.Generator().manual_seed(seed)
    layer.train()
    for _ in range(calls):
        h = torch.randn(16, H, generator=g, dtype=layer.embedding.dtype)
        targets = torch.tensor(words)[torch.randint(len(words), (16,), generator=g)]
        layer.log_prob(h, targets).sum().backward()


def test_kerbs_reallocation_moves_senses_to_frequent_words_within_bounds():
    torch.manual_seed(6)
    layer = output_layer("kerbs:2,reallocate_every=0,max_senses=3", H, V)
    dtype = layer.embedding.dtype
    frequent = [3, 8, 15]
    total = layer.word_of.numel()
    assert torch.bincount(layer.word_of, minlength=V).tolist() == [2] * V
    history = []
    for round_ in range(6):
        before = torch.bincount(layer.word_of, minlength=V)
        feed(layer, frequent, calls=4, seed=round_)
        assert layer.word_seen[frequent].sum() == 4 * 16 and layer.usage.sum() > 0
        moved = layer.reallocate()
        held = torch.bincount(layer.word_of, minlength=V)
        history.append(moved)
        assert layer.word_of.numel() == total and int(held.sum()) == total
        assert int(held.min()) >= 1 and int(held.max()) <= 3
        gained = (held > before).nonzero().squeeze(1).tolist()
        assert set(gained) <= set(frequent) and len(gained) == moved
        assert float(layer.usage.abs().sum()) == 0 and float(layer.word_seen.sum()) == 0  # counts restart
        with torch.no_grad():
            lp = layer.eval().log_probs(torch.randn(4, H, dtype=dtype))
        assert torch.allclose(lp.exp().sum(-1), torch.ones(4, dtype=dtype), atol=1e-5)
    assert history[0] >= 1
    held = torch.bincount(layer.word_of, minlength=V)
    assert held[frequent].tolist() == [3, 3, 3]  # each frequent word at max_senses, and no further
    assert history[-1] == 0

    fresh = output_layer("kerbs:2,reallocate_every=0,max_senses=3", H, V)
    assert not torch.equal(fresh.word_of, layer.word_of)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.word_of, layer.word_of)
    h = torch.randn(3, 5, H, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(fresh.eval().log_probs(h), layer.eval().log_probs(h))


def test_kerbs_reallocates_by_itself_every_so_many_training_calls():
    torch.manual_seed(7)
    layer = output_layer("kerbs:2,reallocate_every=3", H, V)
    dtype = layer.embedding.dtype
    start = layer.word_of.clone()
    feed(layer, [4], calls=2, seed=0)
    with torch.no_grad():  # neither eval calls nor calls without gradients count
        layer.log_prob(torch.randn(4, H, dtype=dtype), torch.tensor([4, 4, 4, 4]))
        layer.eval().log_prob(torch.randn(4, H, dtype=dtype), torch.tensor([4, 4, 4, 4]))
    assert int(layer.calls) == 2 and torch.equal(layer.word_of, start) and layer.word_seen[4] == 32
    feed(layer, [4], calls=1, seed=1)
    assert int(layer.calls) == 3 and float(layer.word_seen.sum()) == 0
    assert torch.bincount(layer.word_of, minlength=V)[4] == 3


@pytest.mark.parametrize("convert", ["float", "double"])
def test_kerbs_trains_after_its_module_changes_dtype(convert):
    """``.float()`` / ``.double()`` cast every floating buffer (``word_nll`` and ``usage`` too):
    training-mode calls still count senses and reallocate."""
    torch.manual_seed(13)
    layer = getattr(output_layer("kerbs:2,reallocate_every=2", H, V), convert)()
    dtype = layer.embedding.dtype
    for _ in range(2):
        layer.log_prob(torch.randn(8, H, dtype=dtype), torch.full((8,), 6)).sum().backward()
    assert int(layer.calls) == 2 and torch.bincount(layer.word_of, minlength=V)[6] == 3


# -- 6. decoders and stories --------------------------------------------------------------------


def test_tied_embeddings_need_the_full_softmax():
    LSTMDecoder(V, 8, 8, tie=True)  # the full softmax ties
    for spec in ("class", "adaptive:div=2", "sampled:5", "mos:2", "kerbs"):
        with pytest.raises(SettingsError, match="tied embeddings need the full softmax"):
            LSTMDecoder(V, 8, 8, tie=True, output=spec)


@pytest.mark.parametrize(
    "spec, message, parsed",
    [
        ("nope", "unknown output layer 'nope'; choose from full, class, adaptive, sampled, mos, kerbs", True),
        ("class:0", "'class:0'", True),
        ("mos:x", "expected an integer, got 'x'", True),
        ("adaptive:cutoffs=10/4", "adaptive cutoffs must rise strictly within 1 .. 22, got 10/4", False),
        ("kerbs:3,max_senses=2", "kerbs: max_senses (2) must be at least senses (3)", False),
    ],
)
def test_bad_output_specs_are_refused_in_one_line(spec, message, parsed):
    """Refused by :func:`parse_output` (the spec alone) or by :func:`output_layer` (the spec
    against the sizes), each in one line naming the problem."""
    if not parsed:
        parse_output(spec)  # well formed: refused only against the sizes
    refusals = (
        [parse_output, lambda s: output_layer(s, H, V)] if parsed else [lambda s: output_layer(s, H, V)]
    )
    for refuse in refusals:
        with pytest.raises(SettingsError) as refusal:
            refuse(spec)
        text = str(refusal.value)
        assert "\n" not in text and message in text, text
        if spec == "class:0":
            assert "classes" in text and ">= 1" in text, text


def sentences_batch():
    return TextBatch.from_ids([[5, 6, 7, 22], [8, 9], [10, 11, 12, 13, 4, 21], [17]])


@pytest.mark.parametrize("name", SPECS)
@torch.no_grad()
def test_an_rnnlm_scores_sentences_by_its_decoders_next_word_probabilities(name):
    torch.manual_seed(8)
    story = RNNLM(V, 8, 8, output=SPECS[name]).double().eval()
    story.decoder.out.fit_frequencies(COUNTS)
    batch = sentences_batch()
    per_step = story.decoder(batch.decoder_inputs)  # [B, T, V]
    assert torch.allclose(per_step.exp().sum(-1), torch.ones(per_step.shape[:2], dtype=torch.float64))
    want = torch.zeros(batch.size, dtype=torch.float64)
    for b in range(batch.size):
        for t in range(int(batch.lengths[b])):
            want[b] += per_step[b, t, batch.targets[b, t]]
    assert torch.allclose(story.log_prob(batch), want, atol=1e-10)


def test_a_sampled_rnnlm_trains_on_the_estimate_and_scores_exactly():
    torch.manual_seed(9)
    story = RNNLM(V, 8, 8, output="sampled:4").double()
    batch = sentences_batch()
    story.eval()
    exact = story.log_prob(batch).detach()
    story.train()  # no dropout: only the output layer's path differs
    estimate = story.log_prob(batch)
    assert estimate.requires_grad and (estimate.detach() - exact).abs().max() > 1e-3
    with torch.no_grad():
        assert torch.allclose(story.log_prob(batch), exact)


def test_fit_output_counts_the_corpus_words_and_one_eos_per_sentence():
    vocab = TextVocab(["<pad>", "<bos>", "<eos>", "<unk>", *(f"w{i}" for i in range(V - 4))])
    g = torch.Generator().manual_seed(10)
    weights = torch.tensor([0.0] * 4 + [1 / (r + 1) for r in range(V - 4)])
    sentences = [
        torch.multinomial(weights, int(n), replacement=True, generator=g).tolist()
        for n in torch.randint(1, 6, (60,), generator=g)
    ]
    corpus = TextCorpus(sentences, vocab)
    counts = torch.zeros(V)
    for s in sentences:
        for w in s:
            counts[w] += 1
    counts[EOS] = len(sentences)
    for story in (
        RNNLM(V, 8, 8, output="adaptive:cutoffs=4/10,div=2"),
        LSTMVAE(V, 2, 8, 8, output="adaptive:cutoffs=4/10,div=2"),
        GMVAE(V, 2, 2, embed_dim=8, hidden_dim=8, output="adaptive:cutoffs=4/10,div=2"),
    ):
        story.fit_output(corpus)
        rank = story.decoder.out.rank.tolist()
        want = sorted(range(V), key=lambda w: (-float(counts[w]), w))
        assert [rank[w] for w in want] == list(range(V)), type(story).__name__
        assert rank[EOS] == 0  # <eos> ends every sentence: the most frequent token here


# -- 7. the numpyro backend ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["class:3", "adaptive:div=2", "sampled:5", "mos:2", "kerbs:2"])
def test_the_numpyro_twin_refuses_other_output_layers_naming_them(spec):
    pytest.importorskip("jax")
    pytest.importorskip("numpyro")
    from fabula.backends.numpyro import twin

    torch.manual_seed(11)
    twin(LSTMVAE(30, 4, 8, 12))  # the full softmax has a twin
    for story in (
        LSTMVAE(30, 4, 8, 12, output=spec),
        GMVAE(30, 3, 2, embed_dim=8, hidden_dim=12, output=spec),
    ):
        name = type(story.decoder.out).__name__
        with pytest.raises(UsageError, match=f"full softmax output layer only, not {name}"):
            twin(story)


# -- 8. CGMH with factored layers: an exact kernel for the exact target -------------------------

CGMH_LAYERS = ["class:2", "adaptive:cutoffs=3/5,div=2", "mos:2", "kerbs:2"]
CGMH_KERNELS = {"full vocabulary": (dict(top_k=None), []), "top-2, a keyword": (dict(top_k=2), [4])}


@pytest.mark.parametrize("kernel_name", CGMH_KERNELS)
@pytest.mark.parametrize("spec", CGMH_LAYERS)
@torch.no_grad()
def test_cgmh_with_a_factored_layer_leaves_the_exact_sentence_distribution_invariant(spec, kernel_name):
    settings, keywords = CGMH_KERNELS[kernel_name]
    torch.manual_seed(12)
    lm = RNNLM(7, 4, 5, output=spec).double().eval()
    lm.decoder.out.fit_frequencies(skewed_counts(7, seed=3))
    if isinstance(lm.decoder.out, KernelizedBayesianSoftmax):
        lm.decoder.out.sharpness.uniform_(-1.0, 1.0)
    story = ConstrainedSentences(lm, max_length=4)
    T, pi, support = transition_matrix(SequenceMH(**settings), story, padded([keywords], 2))
    assert T.min() >= 0 and torch.allclose(T.sum(1), torch.ones(len(T), dtype=torch.float64), atol=1e-13)
    assert (pi @ T - pi).abs().max() < 1e-15
    flow = pi[:, None] * T
    assert (flow - flow.T).abs().max() < 1e-15
    assert (T[support][:, support].diag() < 1).sum() > 0.5 * support.sum()
    # pi is the LM's own sentence distribution: each word's probability from the decoder's
    # per-step distributions, normalised here, multiplied along the sentence (and <eos>)
    batch = TextBatch.from_ids([list(s) for s in STATES])
    per_step = lm.decoder(batch.decoder_inputs)
    per_step = per_step - per_step.logsumexp(-1, keepdim=True)
    log_p = torch.tensor(
        [
            sum(float(per_step[b, t, batch.targets[b, t]]) for t in range(int(batch.lengths[b])))
            for b in range(batch.size)
        ],
        dtype=torch.float64,
    )
    has_keywords = torch.tensor([all(w in s for w in keywords) for s in STATES])
    assert torch.equal(support, has_keywords)
    want = torch.where(support, log_p - log_p[support].logsumexp(0), -torch.inf).exp()
    assert torch.allclose(pi, want, atol=1e-12, rtol=1e-9)


# -- 9. the command line and a training run -----------------------------------------------------


@pytest.mark.parametrize("story", ["rnnlm", "lstm-vae", "gmvae"])
def test_train_help_lists_output_and_the_flag_reaches_the_settings(story, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", story, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "--output OUTPUT" in shown
    for name in OUTPUT_LAYERS:
        assert f"{name}:" in shown.split("--output OUTPUT", 1)[1]
    config = _train_config(parser().parse_args(["train", story, "--output", "mos:2"]))
    assert config.model.output == "mos:2"


def test_a_bad_output_flag_is_refused_in_one_line(tmp_path, capsys):
    code = main(["train", "rnnlm", "--output", "class:0", "--out", str(tmp_path / "run")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "class:0" in lines[0], lines


def test_a_class_factored_rnnlm_trains_saves_and_reloads(tmp_path, one_sentence_corpus):
    from fabula.checkpoint import load_checkpoint
    from fabula.evaluation import evaluate
    from fabula.run import TrainConfig, load_run, train

    config = TrainConfig.create(
        "rnnlm", output="class:3", epochs=1, embed_dim=8, hidden_dim=8, batch_size=256, reference=False
    )
    history = train(config, tmp_path / "run", progress=False)
    assert len(history) == 1 and math.isfinite(history[0]["eval_nll"])
    run = load_run(tmp_path / "run")
    assert run.config.model.output == "class:3"
    story = run.inference.story
    out = story.decoder.out
    assert isinstance(out, ClassFactoredSoftmax) and out.num_classes == 3
    # the class of each word as saved, and as the training corpus's counts bin them
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors").weights
    stored = [w["decoder.out.class_of"] for w in saved.values() if "decoder.out.class_of" in w]
    assert len(stored) == 1 and torch.equal(out.class_of, stored[0])
    train_split = run.splits["train"]
    counts = torch.bincount(train_split.ids, minlength=story.vocab_size).float()
    counts[EOS] += len(train_split)
    fitted = ClassFactoredSoftmax(8, story.vocab_size, 3)
    unfitted = fitted.class_of.clone()
    fitted.fit_frequencies(counts)
    assert torch.equal(out.class_of, fitted.class_of) and not torch.equal(out.class_of, unfitted)
    # the reloaded run scores the evaluation split as the training run did
    split = history[0]["eval_split"]
    again = evaluate(run.inference, run.splits[split])
    assert float(again.nll.mean()) == pytest.approx(history[0]["eval_nll"], rel=1e-5)
    # and its test log-likelihood is the decoder's per-step probabilities at the words (evaluate
    # gives the sentences in its batches' order, sorted by length: compared as sorted values)
    test = run.splits["test"]
    scored = evaluate(run.inference, test)
    batch = test.batch(torch.arange(len(test)))
    with torch.no_grad():
        per_step = story.decoder(batch.decoder_inputs)
    picked = per_step.gather(-1, batch.targets[..., None]).squeeze(-1)
    log_lik = torch.where(batch.mask, picked, 0.0).sum(-1)
    assert torch.allclose(scored.nll.double().sort().values, (-log_lik.double()).sort().values, atol=1e-3)
    assert float(scored.nll.double().sum()) == pytest.approx(-float(log_lik.double().sum()), rel=1e-6)


@pytest.mark.parametrize("name", SPECS)
def test_a_layers_state_round_trips_into_a_fresh_layer(name):
    """Parameters and buffers (classes, ranks, the proposal's order, senses) travel in the state
    dict, as checkpoints save them."""
    layer = make_layer(name)
    fresh = output_layer(SPECS[name], H, V).double()
    h = torch.randn(4, H, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(fresh.eval().log_probs(h), layer.log_probs(h))
        fresh.load_state_dict(layer.state_dict())
        assert torch.equal(fresh.log_probs(h), layer.log_probs(h))
    for key, value in layer.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
