"""fDARN: the autoregressive Bernoulli distribution, the story and its autoregressive guide, against
enumeration over every code, and the inference kinds for binary latents on it."""

import itertools
import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from scipy.stats import chi2
from test_sbn import V, corpus_of

from fabula.cli import main
from fabula.data import BagOfWords
from fabula.data.vocab import Vocab
from fabula.diagnostics import to_arviz
from fabula.distributions import AutoregressiveBernoulli
from fabula.errors import UsageError
from fabula.evaluation import evaluate
from fabula.guides import AutoregressiveBernoulliGuide, BernoulliGuide
from fabula.inference import MCMC, Amortized, DiscreteGibbs, Encoded, Inference
from fabula.inference.kinds import Setup, Training, build
from fabula.models import FDARN, SigmoidBeliefNet
from fabula.models.capabilities import Dreams, HasPosteriorMean
from fabula.run import load_run

F = 4


def codes(size: int = F) -> torch.Tensor:
    """``[2^F, F]``: every binary code."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=size)))


def by_hand(logits: torch.Tensor, weight: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``log p(h)`` as the product of the conditionals, unit by unit."""
    total = torch.zeros(torch.broadcast_shapes(logits.shape, h.shape)[:-1])
    for j in range(h.shape[-1]):
        eta = logits[..., j] + sum((weight[j, i] * h[..., i] for i in range(j)), torch.zeros(()))
        p = torch.sigmoid(eta)
        total = total + torch.where(h[..., j] == 1, p, 1 - p).log()
    return total


def random_coupling(size: int = F, seed: int = 0, spread: float = 2.0) -> torch.Tensor:
    """A full matrix: the distribution must read its strict lower triangle only."""
    return spread * torch.randn(size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("logits_shape", [(F,), (3, F)], ids=["no-context", "context"])
def test_log_prob_is_the_product_of_conditionals_and_sums_to_one(logits_shape):
    logits = torch.randn(logits_shape, generator=torch.Generator().manual_seed(1))
    weight = random_coupling()
    d = AutoregressiveBernoulli(logits, weight)
    assert d.batch_shape == logits_shape[:-1] and d.event_shape == (F,)
    h = codes()[:, *([None] * (len(logits_shape) - 1))]  # [2^F, (3,) F]
    log_p = d.log_prob(h)
    assert log_p.shape == (2**F, *logits_shape[:-1])
    assert torch.allclose(log_p, by_hand(logits, weight, h), atol=1e-6)
    assert torch.allclose(log_p.logsumexp(0), torch.zeros(logits_shape[:-1]), atol=1e-6)


def test_draws_follow_the_probabilities():
    logits = torch.tensor([[0.5, -1.0, 0.0, 1.0], [-2.0, 1.5, 0.3, -0.4]])
    d = AutoregressiveBernoulli(logits, random_coupling(spread=1.0))
    torch.manual_seed(0)
    n = 20_000
    draws = d.sample((n,))
    assert draws.shape == (n, 2, F) and set(draws.unique().tolist()) == {0.0, 1.0}
    index = (draws * 2 ** torch.arange(F - 1, -1, -1)).sum(-1).long()  # row of codes()
    probs = d.log_prob(codes()[:, None]).exp()  # [2^F, 2]
    for b in range(2):
        observed = torch.bincount(index[:, b], minlength=2**F).double()
        expected = n * probs[:, b].double()
        assert expected.min() > 5  # every cell large enough for the chi-square approximation
        statistic = float(((observed - expected) ** 2 / expected).sum())
        assert statistic < chi2.ppf(0.999, 2**F - 1), (b, statistic)  # false alarm 1 in 1000


def test_only_the_strict_lower_triangle_of_the_weight_counts():
    weight = random_coupling().requires_grad_()
    d = AutoregressiveBernoulli(torch.randn(2, F), weight)
    d.log_prob(codes()[:, None]).sum().backward()
    lower = torch.ones(F, F, dtype=torch.bool).tril(-1)
    assert torch.all(weight.grad[~lower] == 0) and torch.all(weight.grad[lower] != 0)
    with torch.no_grad():
        changed = weight + 5 * torch.ones(F, F).triu()
    assert torch.equal(
        AutoregressiveBernoulli(d.logits, changed).log_prob(codes()[:, None]), d.log_prob(codes()[:, None])
    )


def test_the_distribution_is_a_binary_vector_site_like_the_factorised_one():
    d = AutoregressiveBernoulli(torch.zeros(3, F), torch.zeros(F, F))
    factorised = pyro.distributions.Bernoulli(logits=torch.zeros(3, F)).to_event(1)
    h = codes()[:5, None]  # [5, 1, F] broadcast against batch [3]
    assert torch.allclose(d.log_prob(h), factorised.log_prob(h))
    assert d.support.is_discrete and d.support.event_dim == 1 and d.support.check(h).all()
    assert not d.has_rsample and not d.has_enumerate_support
    expanded = d.expand((2, 3))
    assert expanded.batch_shape == (2, 3) and expanded.sample().shape == (2, 3, F)
    with pytest.raises(ValueError, match="weight must be"):
        AutoregressiveBernoulli(torch.zeros(F), torch.zeros(F, F + 1))


def teacher(latent_dim=F, spread=2.5, seed=1):
    """An fDARN with random weights: strong word profiles and couplings between its units."""
    gen = torch.Generator().manual_seed(seed)
    story = FDARN(V, latent_dim)
    with torch.no_grad():
        story.decoder.weight.copy_(spread * torch.randn(V, latent_dim, generator=gen))
        story.decoder.bias.copy_(torch.randn(V, generator=gen))
        story.prior_logits.copy_(torch.randn(latent_dim, generator=gen))
        story.prior_weight.copy_(2 * torch.randn(latent_dim, latent_dim, generator=gen))
    return story


@torch.no_grad()
def test_with_no_couplings_the_story_and_guide_are_the_sbn_and_its_guide():
    story = teacher()
    story.prior_weight.zero_()
    sbn = SigmoidBeliefNet(V, F)
    sbn.load_state_dict({k: v for k, v in story.state_dict().items() if k != "prior_weight"})
    batch = corpus_of(story, 4, 2)["train"].batch(torch.arange(4))
    h = codes()[[1, 6, 11, 15]]
    traces = [poutine.trace(poutine.condition(m.model, data={"h": h})).get_trace(batch) for m in (story, sbn)]
    for trace in traces:
        trace.compute_log_prob()
    for site in ("h", "x"):
        assert torch.allclose(traces[0].nodes[site]["log_prob"], traces[1].nodes[site]["log_prob"])
    guide, factorised = AutoregressiveBernoulliGuide(V, F, hidden=(8,)), BernoulliGuide(V, F, hidden=(8,))
    factorised.net.load_state_dict(guide.net.state_dict())
    traces = [
        poutine.trace(poutine.condition(g, data={"h": h})).get_trace(batch) for g in (guide, factorised)
    ]
    assert torch.allclose(traces[0].log_prob_sum(), traces[1].log_prob_sum())
    assert guide.init_params(4)["logits"].shape == (4, F)
    assert not isinstance(guide, HasPosteriorMean)  # E_q[h] has no closed form
    assert isinstance(story, Dreams)
    latents, dreamt = story.dream(batch)
    assert latents["h"].shape == (4, F) and torch.equal(dreamt.lengths, batch.lengths)


def test_pyro_predictive_and_arviz_work_on_the_story_and_guide():
    story = teacher()
    guide = AutoregressiveBernoulliGuide(V, F)
    batch = corpus_of(story, 4, 4)["test"].batch(torch.arange(4))
    posterior = Predictive(poutine.uncondition(story.model), guide=guide, num_samples=3)(batch)
    prior = Predictive(poutine.uncondition(story.model), num_samples=3)(batch)
    for draws in (posterior, prior):
        assert draws["h"].shape == (3, 4, F) and set(draws["h"].unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(draws["x"].sum(-1), batch.lengths.expand(3, 4))
    idata = to_arviz(Amortized(story, guide, objective=Trace_ELBO()), batch, num_samples=20)
    assert idata.posterior["h"].shape == (1, 20, 4, F) and "x" in idata.log_likelihood


@torch.no_grad()
def enumerated_joint(story, counts):
    """``[B, 2^F]``: log p(x, h) of every code, the prior by hand."""
    h = codes(story.latent_dim)
    return (
        by_hand(story.prior_logits, story.prior_weight, h)
        + counts @ torch.log_softmax(story.decoder(h), -1).T
    )


def test_bounds_with_the_autoregressive_guide_against_enumeration():
    story = teacher(spread=1.0)
    test = corpus_of(story, 4, 64, length=20)["test"]
    torch.manual_seed(0)
    guide = AutoregressiveBernoulliGuide(V, F)
    with torch.no_grad():
        guide.weight.copy_(random_coupling(seed=3, spread=1.0))
        batch = test.batch(torch.arange(len(test)))
        joint = enumerated_joint(story, batch.counts)
        exact_nll = -joint.logsumexp(-1)
        log_q = (
            AutoregressiveBernoulli(guide.local_params(batch)["logits"], guide.weight)
            .log_prob(codes()[:, None])
            .T
        )
        kl = (log_q.exp() * (log_q - joint + joint.logsumexp(-1, keepdim=True))).sum(-1)  # KL(q || p(h | x))
    inference = Inference(story, Encoded(guide))
    # one draw: the ELBO, whose gap to log p(x) is KL(q || p(h | x)) in expectation (4 standard errors)
    error = evaluate(inference, test, "iw:1").nll - exact_nll - kl
    assert error.mean().abs() < 4 * error.std() / math.sqrt(len(error))
    gaps = [float((evaluate(inference, test, f"iw:{s}").nll - exact_nll).mean()) for s in (1, 100, 10_000)]
    # measured: 21, 0.3 and 0.003 nats (within +-0.01 over seeds) above the exact NLL
    assert gaps[0] > gaps[1] > gaps[2] and abs(gaps[2]) < 0.03, gaps


@pytest.mark.parametrize("spec", ["wake-sleep", "rws:5", "nvil"])
def test_each_inference_kind_improves_the_held_out_bound(spec):
    data = corpus_of(teacher())
    torch.manual_seed(0)
    story = FDARN(V, F)
    story.init_background(data["train"])
    guide = AutoregressiveBernoulliGuide(V, F, hidden=(16,))
    inference = build(spec, Setup(story, guide, training=Training(optim_args={"lr": 1e-2}), data=data))
    before = evaluate(inference, data["test"], "iw:20").summary()["nll"]
    history = inference.fit(data["train"], epochs=15, batch_size=32, progress=False)
    after = evaluate(inference, data["test"], "iw:20").summary()["nll"]
    assert after < before - 5, (before, after)  # measured: from about 75.5 nats to 62-67
    assert history[-1]["loss"] < history[0]["loss"]
    # both autoregressive parts learn
    assert story.prior_weight.tril(-1).abs().sum() > 0 and guide.weight.tril(-1).abs().sum() > 0


def test_gibbs_draws_follow_the_enumerated_posterior_and_nuts_refuses():
    story = teacher(spread=0.8)
    torch.manual_seed(1)
    docs = story.generate(torch.tensor([5.0, 12.0]))
    copies = 1500  # each document many times in one batch: independent chains, one draw each
    data = BagOfWords.from_dense(docs.repeat_interleave(copies, 0), Vocab([f"w{i:02d}" for i in range(V)]))
    batch = data.batch(torch.arange(len(data)))
    guide = AutoregressiveBernoulliGuide(V, F)
    mcmc = MCMC(story, guide, kernel=DiscreteGibbs(), num_samples=1, warmup=20, progress=False, seed=2)
    h = mcmc.posterior(batch)["h"][0]
    index = (h * 2 ** torch.arange(F - 1, -1, -1)).sum(-1).long()
    with torch.no_grad():
        h_all = codes()
        joint = (
            by_hand(story.prior_logits, story.prior_weight, h_all)
            + docs @ torch.log_softmax(story.decoder(h_all), -1).T
        )
        exact = (joint - joint.logsumexp(-1, keepdim=True)).exp()
    for d in range(2):
        observed = torch.bincount(index[d * copies : (d + 1) * copies], minlength=2**F).double()
        expected = copies * exact[d].double()
        big = expected >= 5
        cells_o = torch.cat([observed[big], observed[~big].sum(0, keepdim=True)])
        cells_e = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)])
        keep = cells_e > 0
        statistic = float(((cells_o - cells_e)[keep] ** 2 / cells_e[keep]).sum())
        assert statistic < chi2.ppf(0.999, int(keep.sum()) - 1), (d, statistic)
    with pytest.raises(UsageError, match="all discrete"):
        MCMC(story, progress=False).run(batch)
    with pytest.raises(UsageError, match="discrete"):  # no JAX twin: NumPyro's generic path refuses too
        MCMC(story, backend="numpyro", progress=False).run(batch)


def test_train_and_evaluate_from_the_command_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    tiny = ["--epochs", "1", "--latent-dim", "4", "--hidden", "8", "--quiet", "--no-reference"]
    assert main(["train", "fdarn", "--out", run, *tiny]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--estimator", "iw:10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["inference"], report["estimator"], report["samples"]) == ("nvil", "iw", 10)
    assert 1 < report["perplexity"] < 500 and math.isfinite(report["nll"])  # the synthetic corpus's 500 words
    loaded = load_run(run).inference
    assert isinstance(loaded.story, FDARN) and isinstance(loaded.guide, AutoregressiveBernoulliGuide)
    assert loaded.story.prior_weight.tril(-1).abs().sum() > 0  # the trained couplings, reloaded
    assert main(["topics", run, "--k", "3"]) == 0
    assert sum(line.startswith("z[") for line in capsys.readouterr().out.splitlines()) == 4  # one per unit
