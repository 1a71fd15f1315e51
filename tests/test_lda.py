"""LDA as a story, and the kinds and estimator that need its form: collapsed Gibbs sampling
against the exact posterior of the token topics (chi-square), variational Bayes's fixed point,
and the left-to-right and importance-weighted estimates against log p(w) summed over every
topic assignment."""

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from fabula.data import BagOfWords, Vocab
from fabula.distributions import BagOfWordsMultinomial, TopicMixtureBagOfWords
from fabula.errors import SettingsError, UsageError
from fabula.evaluation import evaluate, parse_estimator
from fabula.evaluation.left_to_right import left_to_right
from fabula.guides import NormalGuide
from fabula.guides.simplex import AdditiveLogRatio, logistic_normal
from fabula.inference import CollapsedGibbs, VariationalBayes, build
from fabula.inference.collapsed_gibbs import sweep
from fabula.inference.kinds import KINDS, Setup, unfit
from fabula.inference.topic_tokens import TokenLayout
from fabula.inference.variational_bayes import expected_log_simplex, mean_field
from fabula.models import LDA, NVDM
from fabula.run import TrainConfig, train
from fabula.run.load import load_run

BETA = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
ALPHA = 0.5
DOCUMENT = [0, 2, 2, 1]  # word ids of one document's tokens


def tiny_story(beta=BETA, alpha=ALPHA) -> LDA:
    story = LDA(beta.shape[1], beta.shape[0], alpha=alpha, eta=0.3)
    story.set_topics(beta)
    return story


def counts_of(tokens, vocab=3) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=vocab).float()[None]


def log_dirichlet_multinomial(n: torch.Tensor, a: torch.Tensor) -> float:
    """log of a Dirichlet(a)-multinomial probability of one sequence with topic counts n."""
    return float(
        torch.lgamma(a.sum())
        - torch.lgamma(n.sum() + a.sum())
        + (torch.lgamma(n + a) - torch.lgamma(a)).sum()
    )


def exact_posterior(tokens, beta, alpha, eta=None) -> dict[tuple, float]:
    """p(z | w) over every topic assignment z of ``tokens``, by enumeration: theta integrated out,
    and beta given (``eta=None``) or integrated out under Dirichlet(eta) (one document)."""
    K, V = beta.shape
    log_joint = {}
    for z in itertools.product(range(K), repeat=len(tokens)):
        n = torch.bincount(torch.tensor(z), minlength=K).double()
        value = log_dirichlet_multinomial(n, torch.full((K,), alpha, dtype=torch.float64))
        if eta is None:
            value += sum(math.log(beta[k, w]) for k, w in zip(z, tokens, strict=True))
        else:
            for k in range(K):
                nkv = torch.zeros(V, dtype=torch.float64)
                for zk, w in zip(z, tokens, strict=True):
                    nkv[w] += zk == k
                value += log_dirichlet_multinomial(nkv, torch.full((V,), eta, dtype=torch.float64))
        log_joint[z] = value
    total = torch.logsumexp(torch.tensor(list(log_joint.values())), 0)
    return {z: math.exp(v - total) for z, v in log_joint.items()}


def exact_log_evidence(tokens, beta, alpha) -> float:
    """log p(w): the token sequence's probability, every topic assignment summed."""
    K = beta.shape[0]
    terms = []
    for z in itertools.product(range(K), repeat=len(tokens)):
        n = torch.bincount(torch.tensor(z), minlength=K).double()
        terms.append(
            log_dirichlet_multinomial(n, torch.full((K,), alpha, dtype=torch.float64))
            + sum(math.log(beta[k, w]) for k, w in zip(z, tokens, strict=True))
        )
    return float(torch.logsumexp(torch.tensor(terms), 0))


def chi_square_p(observed: torch.Tensor, exact: dict) -> float:
    """The p-value of the observed state counts under the exact probabilities."""
    probs = torch.tensor(list(exact.values()), dtype=torch.float64)
    return chisquare(observed.numpy(), (probs / probs.sum() * observed.sum()).numpy()).pvalue


def test_layout_visits_every_token_once_by_position():
    counts = torch.tensor([[2.0, 0, 1], [0, 1, 0], [1, 1, 1]])
    layout = TokenLayout.of(counts)
    assert layout.offsets == [0, 3, 5, 7]  # three documents at position 0, two at 1 and 2
    assert layout.order.tolist() == [0, 2, 1]
    assert sorted(layout.tokens.tolist()) == list(range(7))
    assert layout.words[:3].tolist() == [0, 0, 1]  # the first token of documents 0, 2, 1
    assert layout.words.bincount(minlength=3).tolist() == [3, 2, 2]


def test_gibbs_with_given_topics_draws_the_exact_posterior():
    """Many copies of one document (independent chains: the topics are given) after burn-in."""
    torch.manual_seed(0)
    tokens, copies = [0, 2, 1], 3000
    counts = counts_of(tokens).expand(copies, -1).contiguous()
    layout = TokenLayout.of(counts)
    z = torch.randint(2, (len(layout.words),))
    doc_topic = torch.zeros(copies, 2).index_put_(
        (torch.arange(copies).repeat(3), z), torch.ones(len(z)), accumulate=True
    )
    for _ in range(20):
        sweep(layout, z, doc_topic, torch.full((2,), ALPHA), beta=BETA)
    # slot s holds position s // copies of document rank s % copies; the layout orders a
    # document's tokens by word id: 0, 1, 2
    states = z.reshape(3, copies).T.tolist()
    exact = exact_posterior([0, 1, 2], BETA, ALPHA)
    observed = torch.tensor([sum(tuple(s) == key for s in states) for key in exact], dtype=torch.float64)
    assert chi_square_p(observed, exact) > 1e-3


def test_collapsed_gibbs_on_one_document_draws_the_exact_posterior():
    """The topics integrated out: one chain, thinned, against enumeration."""
    torch.manual_seed(1)
    tokens, eta = [0, 1, 2], 0.3
    layout = TokenLayout.of(counts_of(tokens))
    z = torch.zeros(3, dtype=torch.long)
    doc_topic = torch.tensor([[3.0, 0.0]])
    word_topic = torch.zeros(3, 2).index_put_((layout.words, z), torch.ones(3), accumulate=True)
    topic_total = word_topic.sum(0)
    draws = []
    for i in range(6000):
        sweep(
            layout,
            z,
            doc_topic,
            torch.full((2,), ALPHA),
            word_topic=word_topic,
            topic_total=topic_total,
            eta=eta,
        )
        if i >= 100 and i % 3 == 0:
            draws.append(tuple(z.tolist()))
    exact = exact_posterior([0, 1, 2], BETA, ALPHA, eta=eta)
    observed = torch.tensor([draws.count(key) for key in exact], dtype=torch.float64)
    assert chi_square_p(observed, exact) > 1e-3
    assert torch.equal(word_topic.sum(0), topic_total) and doc_topic.sum() == 3


def test_left_to_right_agrees_with_the_sum_over_every_topic_assignment():
    torch.manual_seed(2)
    story = tiny_story()
    exact = exact_log_evidence(sorted(DOCUMENT), BETA, ALPHA)
    estimate = left_to_right(story, counts_of(DOCUMENT), particles=200_000)
    assert estimate.shape == (1,)
    assert float(estimate[0]) == pytest.approx(exact, abs=0.01)


def test_left_to_right_keeps_each_document_in_place_and_is_seeded():
    story = tiny_story()
    counts = torch.cat([counts_of([0, 0, 0, 0, 0]), counts_of([2]), counts_of([1, 2])])
    torch.manual_seed(3)
    estimate = left_to_right(story, counts, particles=4000)
    for row, tokens in zip(estimate, [[0] * 5, [2], [1, 2]], strict=True):
        assert float(row) == pytest.approx(exact_log_evidence(tokens, BETA, ALPHA), abs=0.02)
    corpus = BagOfWords.from_dense(counts, Vocab(["a", "b", "c"]))
    vb = VariationalBayes(story)
    first = evaluate(vb, corpus, "left-to-right:50", progress=False).nll
    assert torch.equal(first, evaluate(vb, corpus, "left-to-right:50", progress=False).nll)


def test_importance_weighted_with_a_fitted_dirichlet_agrees_with_enumeration():
    torch.manual_seed(4)
    story = tiny_story()
    corpus = BagOfWords.from_dense(counts_of(DOCUMENT), Vocab(["a", "b", "c"]))
    exact = exact_log_evidence(sorted(DOCUMENT), BETA, ALPHA)
    inference = CollapsedGibbs(story)  # its q: a Dirichlet fitted per document by mean field
    iw = evaluate(inference, corpus, "iw:20000", progress=False).nll
    elbo = evaluate(inference, corpus, "elbo:2000", progress=False).nll
    # bounds, in order; the posterior's boundary singularity (alpha < 1) gives the weights a
    # heavy tail, so the IW bound closes most of the ELBO's gap but not all of it
    assert -exact < float(iw[0]) < float(elbo[0])
    assert float(iw[0]) + exact < 0.25 * (float(elbo[0]) + exact)


def test_mean_field_reaches_its_fixed_point():
    counts = torch.tensor([[3.0, 0, 1], [0, 2, 5]])
    alpha = torch.full((2,), ALPHA)
    gamma, weights, norm = mean_field(counts, alpha, BETA, iterations=500, tolerance=1e-10)
    again = alpha + expected_log_simplex(gamma).exp() * ((counts / norm) @ BETA.T)
    torch.testing.assert_close(again, gamma, atol=1e-5, rtol=0)
    torch.testing.assert_close(gamma.sum(-1), alpha.sum() + counts.sum(-1))  # sum_k phi_vk = 1


def synthetic_corpus(seed=0, docs=200, length=30):
    """Documents of an LDA with two well-separated topics over six words."""
    generator = torch.Generator().manual_seed(seed)
    topics = torch.tensor([[0.3, 0.3, 0.3, 0.05, 0.025, 0.025], [0.025, 0.025, 0.05, 0.3, 0.3, 0.3]])
    theta = torch.distributions.Dirichlet(torch.full((2,), 0.3)).sample((docs,))
    counts = torch.stack([torch.multinomial(t @ topics, length, True, generator=generator) for t in theta])
    counts = torch.zeros(docs, 6).scatter_add_(1, counts, torch.ones(docs, length))
    return BagOfWords.from_dense(counts, Vocab([f"w{i}" for i in range(6)])), topics


@pytest.mark.parametrize("kind", ["collapsed-gibbs", "vb"])
def test_gibbs_and_vb_recover_the_topics_of_their_own_story(kind):
    torch.manual_seed(5)
    corpus, topics = synthetic_corpus()
    story = LDA(6, 2, alpha=0.3, eta=0.1)
    inference = build(kind, Setup(story, None))
    inference.begin(corpus)
    for epoch in range(30):
        for batch in corpus.batches(50, shuffle=True, seed=0, epoch=epoch):
            inference.step(batch)
    found = story.topic_word()
    error = min((found - topics).abs().max(), (found.flip(0) - topics).abs().max())
    assert error < 0.06


def test_kinds_refuse_stories_not_of_lda_form():
    assert "DirichletTopics" in unfit(KINDS["collapsed-gibbs"], NVDM)
    assert unfit(KINDS["vb"], LDA) is None
    with pytest.raises(SettingsError, match="LDA's form"):
        CollapsedGibbs(NVDM(6, 2))
    with pytest.raises(UsageError, match="LDA's form"):
        parse_estimator("left-to-right:10").check(build("vae", Setup(NVDM(6, 2), NormalGuide(6, 2))))


def lda_config(kind: str, epochs: int) -> TrainConfig:
    return TrainConfig.create(
        "lda", epochs=epochs, num_topics=3, hidden=(8,), inference=kind, reference=False, batch_size=100
    )


@pytest.mark.parametrize("kind", ["vae", "collapsed-gibbs", "vb"])
def test_each_kind_trains_loads_and_is_scored_left_to_right(kind, tmp_path):
    history = train(lda_config(kind, 1), tmp_path / "run", progress=False)
    assert math.isfinite(history[-1]["eval_nll"])
    run = load_run(tmp_path / "run")
    assert run.inference.spec == kind
    report = evaluate(run.inference, run.splits["test"], "left-to-right:5", progress=False)
    assert torch.isfinite(report.nll).all()


def test_collapsed_gibbs_resumes_exactly(tmp_path):
    train(lda_config("collapsed-gibbs", 2), tmp_path / "whole", progress=False)
    train(lda_config("collapsed-gibbs", 1), tmp_path / "part", progress=False)
    train(lda_config("collapsed-gibbs", 2), tmp_path / "part", resume=True, progress=False)
    whole, part = (load_run(tmp_path / name).inference.story for name in ("whole", "part"))
    torch.testing.assert_close(whole.topic_logits, part.topic_logits, rtol=0, atol=0)


def test_the_mixture_likelihood_equals_the_dense_one_at_every_word():
    """Scored at the words a document holds, with draws of theta on a leading dimension; the
    gradients agree through the maps onto the simplex (the dense score differs off it)."""
    torch.manual_seed(6)
    a, logits = torch.randn(5, 3, 4, requires_grad=True), torch.randn(4, 12, requires_grad=True)
    counts = torch.distributions.Multinomial(20, torch.full((12,), 1 / 12)).sample((3,))

    def scores(mixture):
        theta, topics = torch.softmax(a, -1), torch.softmax(logits, -1)
        value = mixture(theta, topics).log_prob(counts)
        return value, torch.autograd.grad(value.sum(), (a, logits))

    sparse, sparse_grads = scores(TopicMixtureBagOfWords)
    dense, dense_grads = scores(lambda theta, topics: BagOfWordsMultinomial((theta @ topics).log()))
    torch.testing.assert_close(sparse, dense)
    for got, want in zip(sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    theta, topics = torch.softmax(a[0], -1).detach(), torch.softmax(logits, -1).detach()
    drawn = TopicMixtureBagOfWords(theta, topics, total_count=torch.tensor([7.0, 3.0, 5.0])).sample()
    assert drawn.sum(-1).tolist() == [7.0, 3.0, 5.0]


def test_the_logistic_normal_density_is_a_change_of_variables_and_stays_finite():
    """log |det d theta_{1..K-1} / dx| against autograd's Jacobian; a draw whose smallest
    proportion underflows keeps a finite log-density."""
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    transform = AdditiveLogRatio()
    jacobian = torch.autograd.functional.jacobian(lambda v: transform(v)[:-1], x)
    torch.testing.assert_close(transform.log_abs_det_jacobian(x, transform(x)), jacobian.det().abs().log())
    torch.testing.assert_close(transform.inv(transform(x)), x)
    q = logistic_normal(torch.tensor([-200.0, 0.0]), torch.ones(2))
    draw = q.rsample()
    assert float(draw[0]) == 0.0 and math.isfinite(float(q.log_prob(draw)))
