"""Honest numbers on stories a user may write, checked against Pyro: auxiliary guide sites, a
guide drawn in another order than the story, masks and scales in every estimator, stories that
do not broadcast over a leading particle dimension, finite discrete latents summed out, Gibbs
over categorical sites, and MCMC on a user's story without a guide."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from scipy import stats

from fabula.data import BagOfWords, Vectors
from fabula.errors import UsageError
from fabula.evaluation import evaluate
from fabula.guides import Guide
from fabula.inference import MCMC, Amortized, DiscreteGibbs, MeanFieldELBO
from fabula.models import Story
from fabula.particles import ParticleWarning, enumerated_posterior, guide_draws, replay
from fabula.traces import TraceOrderWarning, sample_sites
from user_like_stories import case, exact_log_marginal, pyro_iw, pyro_log_joint


class Gaussian(Story):
    """The issue's reproduction: in a plate, z ~ N(0, 1) and x ~ N(z, 1) observed."""

    latent_sites = ("z",)

    def __init__(self):
        super().__init__()
        self.register_buffer("zero", torch.tensor(0.0))

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zero, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=batch.x[:, 0])


class AuxiliaryGuide(Guide):
    """a ~ N(0, 1) (auxiliary), then z ~ N(loc + w a, 1): a guide site the story lacks."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.tensor(0.3))
        self.w = torch.nn.Parameter(torch.tensor(0.7))

    def local_params(self, batch):
        return {}

    def forward(self, batch, params=None):
        with pyro.plate("data", batch.size, dim=-1):
            a = pyro.sample("a", dist.Normal(torch.zeros(batch.size), 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", dist.Normal(self.loc + self.w * a, 1.0))


def test_the_mean_field_elbo_scores_an_auxiliary_guide_site_as_pyro_does():
    story, guide = Gaussian(), AuxiliaryGuide()
    batch = Vectors(torch.linspace(-2, 2, 10)[:, None]).batch(torch.arange(10))
    torch.manual_seed(3)
    ours = MeanFieldELBO().loss(story.model, guide, batch)
    torch.manual_seed(3)
    theirs = TraceMeanField_ELBO().loss(story.model, guide, batch)
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_a_guide_drawn_against_the_story_s_order_is_said_once_and_scored_without_bias():
    story, guide, data = case("dependent-guide").make()
    batch = data.batch(torch.arange(len(data)))
    elbo = MeanFieldELBO()
    with pytest.warns(
        TraceOrderWarning, match=r"draws \['z2', 'z1'\], the story \['z1', 'z2'\]: an analytic KL of \['z2'\]"
    ):
        elbo.loss(story.model, guide, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses = torch.tensor([elbo.loss(story.model, guide, batch) for _ in range(4000)])
    exact = -exact_log_marginal(story, batch).sum()
    # the ELBO is a bound: its mean lies above -log p(x) (the loss is -ELBO), within noise of
    # Pyro's Trace_ELBO (checked in the validity matrix); the analytic KL at the other's draw,
    # Pyro's TraceMeanField_ELBO, lies below it here
    assert float(losses.mean()) > float(exact)


def test_importance_weights_apply_the_story_s_mask_and_scale():
    for name in ("masked-poisson", "scaled"):
        story, guide, data = case(name).make()
        batch = data.batch(torch.arange(len(data)))
        inference = Amortized(story, guide)
        torch.manual_seed(0)
        iw = -float(evaluate(inference, data, "iw:1000").nll.sum())
        elbo = -float(evaluate(inference, data, "elbo:1000").nll.sum())
        exact = float(exact_log_marginal(story, batch).sum())
        assert elbo < iw <= exact + 0.05, (name, elbo, iw, exact)
        assert iw == pytest.approx(pyro_iw(story, guide, batch, 1000, seed=1), abs=0.1)


def test_a_story_that_does_not_broadcast_is_replayed_draw_by_draw_and_said_once():
    for name in ("batchnorm-decoder", "no-broadcast"):
        story, guide, data = case(name).make()
        batch = data.batch(torch.arange(8))
        story.eval(), guide.eval()
        with torch.no_grad():
            draws = guide_draws(guide, batch, 5)
            values = {s["name"]: s["value"] for s in sample_sites(draws)}
            with pytest.warns(ParticleWarning, match=type(story).__name__):
                ours = replay(story, batch, draws, 5).joint
            theirs = pyro_log_joint(story, batch, values, 5)
            with pyro.plate("particles", 5, dim=-2):  # what a vectorised replay would have said
                try:
                    trace = poutine.trace(poutine.replay(story.model, trace=draws)).get_trace(batch)
                    trace.compute_log_prob()
                    wrong = sum(s["log_prob"] for s in sample_sites(trace))
                except RuntimeError:
                    wrong = None
        assert torch.allclose(ours.double(), theirs, rtol=1e-4)
        assert wrong is None or not torch.allclose(wrong.double(), theirs, rtol=1e-2)


def test_the_mixture_of_unigrams_gets_its_exact_nll_by_default():
    for name in ("mixture-of-unigrams", "mixture-of-unigrams-enumerated"):
        story, guide, data = case(name).make()
        batch = data.batch(torch.arange(len(data)))
        report = evaluate(Amortized(story, guide), data)
        assert report.estimator == "exact"
        assert torch.allclose(-report.nll.double(), exact_log_marginal(story, batch), rtol=1e-5)
    # the enumerated story's ELBO is its log-likelihood: nothing is left to q
    elbo = evaluate(Amortized(story, guide), data, "elbo:1")
    assert torch.allclose(-elbo.nll.double(), exact_log_marginal(story, batch), rtol=1e-5)


def test_nuts_refuses_a_story_whose_latents_are_all_discrete():
    story, _, data = case("mixture-of-unigrams").make()
    mcmc = MCMC(story, num_samples=2, warmup=1, progress=False)
    with pytest.raises(UsageError, match="all discrete: NUTS moves continuous ones"):
        mcmc.run(data.batch(torch.arange(4)))


def test_a_sum_over_too_many_values_is_refused_naming_the_size():
    story, _, data = case("mixture-of-unigrams").make()
    batch = data.batch(torch.arange(2))
    from fabula import particles

    limit, particles.MAX_ENUMERATION = particles.MAX_ENUMERATION, 2
    try:
        with pytest.raises(
            UsageError,
            match=r"MixtureOfUnigrams has no exact posterior by enumeration: its latents take 3 joint values per datum, above 2",
        ):
            enumerated_posterior(story, batch)
    finally:
        particles.MAX_ENUMERATION = limit


def test_gibbs_on_a_categorical_site_draws_the_exact_posterior():
    """A mixture of unigrams on short documents (a spread-out posterior): c is the only latent, so
    each sweep draws it from p(c | x) exactly; a chi-square test of 400 draws per document."""
    story, _, data = case("mixture-of-unigrams").make()
    counts = torch.zeros(4, len(data.vocab))
    counts[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 1.0
    counts[torch.arange(4), torch.tensor([4, 4, 5, 6])] += 1.0
    batch = BagOfWords.from_dense(counts, data.vocab).batch(torch.arange(4))
    exact = enumerated_posterior(story, batch)["c"]  # [B, K]
    mcmc = MCMC(story, kernel=DiscreteGibbs(), num_samples=400, warmup=5, progress=False, seed=1)
    draws = mcmc.posterior(batch)["c"]  # [400, B]
    for b in range(4):
        observed = torch.bincount(draws[:, b], minlength=exact.shape[1]).double()
        expected = 400 * exact[b].double()
        keep = expected > 5
        pooled_obs = torch.cat([observed[keep], observed[~keep].sum(0, keepdim=True)])
        pooled_exp = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)])
        if pooled_exp[-1] == 0:
            pooled_obs, pooled_exp = pooled_obs[:-1], pooled_exp[:-1]
        if len(pooled_exp) < 2:
            continue
        statistic = float(((pooled_obs - pooled_exp) ** 2 / pooled_exp).sum())
        assert stats.chi2.sf(statistic, len(pooled_exp) - 1) > 1e-3, (b, observed, expected)


def test_nuts_sums_out_a_discrete_site_and_starts_without_a_guide_from_the_prior():
    """The Gaussian-mixture latent story (c enumerated, z continuous): MCMC without a guide
    starts from the story's prior trace, Pyro's NUTS sums c out, and the draws' mean of z agrees
    with the exact posterior mean of the mixture."""
    story, _, data = case("gaussian-mixture-latent").make()
    batch = data.batch(torch.arange(4))
    story.requires_grad_(False)
    mcmc = MCMC(story, num_samples=300, warmup=150, progress=False, seed=0)
    z = mcmc.posterior(batch)["z"]  # [S, B, D]
    # p(z | x) = sum_c p(c | x) N(z; m_c, v) with v = s^2 / (1 + s^2), m_c = v (mu_c + x / s^2)
    noise2 = story.noise**2
    variance = noise2 / (1 + noise2)
    means = variance * (story.means[:, None, :] + batch.x[None] / noise2)  # [K, B, D]
    log_w = story.mixture_logits.log_softmax(-1)[:, None] + dist.Normal(
        story.means[:, None, :], math.sqrt(1 + noise2)
    ).log_prob(batch.x[None]).sum(-1)
    weights = log_w.softmax(0)  # [K, B]
    exact_mean = (weights[..., None] * means).sum(0).detach()
    se = z.std(0) / math.sqrt(300 / 10)  # a generous effective sample size
    assert ((z.mean(0) - exact_mean).abs() < 5 * se + 0.05).all(), (z.mean(0), exact_mean)


def test_arviz_takes_categorical_draws_and_refuses_a_q_that_draws_nothing():
    from fabula.diagnostics import to_arviz

    story, guide, data = case("mixture-of-unigrams-enumerated").make()
    batch = data.batch(torch.arange(4))
    mcmc = MCMC(story, kernel=DiscreteGibbs(), num_samples=20, warmup=2, num_chains=2, progress=False)
    idata = to_arviz(mcmc, batch)
    assert idata.posterior["c"].shape == (2, 20, 4)
    # the log-likelihood of a draw is log p(x | c), every component a proper word distribution
    assert (idata.log_likelihood["x"].values < 0).all()
    with pytest.raises(UsageError, match="draws no latent site of MixtureOfUnigrams"):
        to_arviz(Amortized(story, guide), batch)
    story, guide, data = case("gaussian-mixture-latent").make()
    idata = to_arviz(Amortized(story, guide), data.batch(torch.arange(4)), num_samples=30)
    assert idata.posterior["z"].shape[:3] == (1, 30, 4) and set(idata.log_likelihood) == {"x"}


def test_mi_comes_with_its_standard_error_and_au_with_its_threshold():
    story, guide, data = case("mixture-of-unigrams").make()
    summary = evaluate(Amortized(story, guide), data, "elbo", batch_size=4).summary()
    assert summary["au_threshold"] == 0.01
    assert summary["mi_se"] > 0 and math.isfinite(summary["mi"])
    one_batch = evaluate(Amortized(story, guide), data, "elbo", batch_size=len(data)).summary()
    assert "mi_se" not in one_batch  # one batch: no spread to read a standard error from
