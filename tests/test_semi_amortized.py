import copy

import pyro
import pytest
import torch
from pyro.distributions import MultivariateNormal

from fabula.data import Vectors
from fabula.evaluation import evaluate
from fabula.guides import NormalGuide
from fabula.inference import (
    Amortized,
    AmortizedSVI,
    Refinement,
    SemiAmortized,
    StochasticVI,
    Trainable,
    refined,
)
from fabula.inference.annealing import Constant
from fabula.inference.refinement import negative_elbo
from helpers import linear_gaussian_setup, orthogonal_linear_gaussian, sentence_setup


def test_sa_vae_with_zero_steps_is_amortized_vi():
    story, guide, corpus = sentence_setup()
    batch = next(corpus["train"].batches(16))
    a = Amortized(copy.deepcopy(story), copy.deepcopy(guide))
    s = SemiAmortized(copy.deepcopy(story), copy.deepcopy(guide), Refinement(steps=0))
    for inference in (a, s):
        pyro.set_rng_seed(4)
        inference.step(batch)
    for p, q in zip(a.params, s.params, strict=True):
        assert torch.equal(p, q)


@pytest.fixture
def float64_story():
    """A small linear-Gaussian story, its encoder guide and 6 data, all in float64."""
    torch.set_default_dtype(torch.float64)
    try:
        story = orthogonal_linear_gaussian(data_dim=4, latent_dim=2)
        torch.manual_seed(0)
        yield story, NormalGuide(4, 2, hidden=[3], activation="tanh"), Vectors(story.generate(6))
    finally:
        torch.set_default_dtype(torch.float32)


def test_unrolled_gradient_matches_finite_differences_of_the_total_derivative(float64_story):
    story, guide, data = float64_story
    refinement = Refinement(steps=3, lr=0.1, momentum=0.5, clip_norm=None)
    batch = data.batch(torch.arange(5))

    def final_loss():
        pyro.set_rng_seed(11)  # the same draws on every call: a deterministic function
        lam = refinement.run(story, guide, batch, guide.local_params(batch), differentiable=True)
        return negative_elbo(story, guide, batch, lam)

    checked = [guide.net.mlp[0].weight, story.weight]  # an encoder and a story parameter
    grads = torch.autograd.grad(final_loss(), checked)
    h = 1e-6
    for param, grad in zip(checked, grads, strict=True):
        for index in [(0, 0), (1, 1)]:
            values = []
            for shift in (h, -2 * h, h):
                with torch.no_grad():
                    param[index] += shift
                values.append(final_loss().item())
            up, down = values[0], values[1]
            assert grad[index].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8)


def test_per_instance_svi_reaches_the_exact_posterior():
    """Per-datum SGD on the ELBO of a linear-Gaussian story, whose posterior is Gaussian and
    diagonal: the gap KL(q || p(z|x)) = log p(x) - ELBO shrinks with the step size, towards 0."""
    story, guide, data = linear_gaussian_setup(num_data=50)
    batch = data.batch(torch.arange(50))
    posterior = story.posterior(batch.x)

    def gap(lam):
        q = MultivariateNormal(lam["loc"], scale_tril=torch.diag_embed(lam["log_scale"].exp()))
        with torch.no_grad():
            return torch.distributions.kl_divergence(q, posterior).mean().item()

    lam = guide.init_params(50)
    gaps = [gap(lam)]
    svi = StochasticVI(story, guide, Refinement(steps=3000, lr=0.01, momentum=0.5, clip_norm=None))
    lam = svi.local_params(batch)  # from the prior, as the inference object starts
    gaps.append(gap(lam))
    for lr in (1e-3, 2e-4):  # SGD's stationary noise scales with the step size
        lam = Refinement(steps=3000, lr=lr, momentum=0.5, clip_norm=None).run(story, guide, batch, lam)
        gaps.append(gap(lam))
    assert gaps[0] > 2.0
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.01, gaps


def test_refinement_runs_under_no_grad_for_evaluation():
    story, guide, corpus = sentence_setup()
    batch = next(corpus["test"].batches(8))
    sa = SemiAmortized(story, guide, Refinement(steps=2))
    with torch.no_grad():
        lam = sa.local_params(batch)
    assert not lam["loc"].requires_grad
    assert not torch.allclose(lam["loc"], guide.local_params(batch)["loc"])
    with pytest.raises(ValueError):
        Refinement(steps=-1)


@pytest.mark.parametrize("variant", ["krishnan", "hjelm"])
def test_vae_svi_updates_the_story_at_lambda_k_and_the_encoder_by_its_rule(variant):
    story, guide, corpus = sentence_setup()
    batch = next(corpus["train"].batches(16))
    inference = AmortizedSVI(story, guide, Refinement(steps=3, lr=0.5), variant=variant)
    before = {
        name: [p.detach().clone() for p in m.parameters()] for name, m in (("story", story), ("guide", guide))
    }
    inference.step(batch)
    for name, module in (("story", story), ("guide", guide)):
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters(), strict=True)), (
            name
        )
    refined = inference.local_params(batch)
    assert not torch.allclose(refined["loc"], guide.local_params(batch)["loc"])
    with pytest.raises(ValueError, match="variant"):
        AmortizedSVI(story, guide, variant="other")


def test_test_time_refinement_tightens_the_elbo_of_a_trained_amortized_model():
    story, guide, data = linear_gaussian_setup(num_data=200)
    vae = Amortized(story, guide, optim_args={"lr": 0.03})
    vae.fit(data, epochs=3, batch_size=50, progress=False)
    test_time = refined(vae, Refinement(steps=300, lr=0.02, clip_norm=None))
    torch.manual_seed(0)
    plain = evaluate(vae, data, "elbo:50").summary()["nll"]
    torch.manual_seed(0)
    tight = evaluate(test_time, data, "elbo:50").summary()["nll"]
    exact = -story.log_marginal(data.x).mean().item()
    # the amortization gap (plain - tight) is positive; refined, the bound stays above log p(x)
    assert exact - 0.05 < tight < plain
    assert isinstance(vae, Trainable) and not isinstance(test_time, Trainable)  # it does not offer step


def test_gaps_split_the_inference_gap_on_a_linear_gaussian_story():
    from fabula.evaluation.gaps import inference_gaps

    story, guide, data = linear_gaussian_setup(num_data=100)
    vae = Amortized(story, guide, optim_args={"lr": 0.03})
    vae.fit(data, epochs=2, batch_size=50, progress=False)
    gaps = inference_gaps(vae, refined(vae, Refinement(steps=2000, lr=0.004, clip_norm=None)), data, 200, 50)
    exact = story.log_marginal(data.x).mean().item()
    # the best mean-field q of a Gaussian posterior with precision L misses it by
    # 0.5 (sum_i log L_ii - log det L): the exact approximation gap of this story
    with torch.no_grad():
        precision = torch.linalg.inv(story.posterior(data.x[:1]).covariance_matrix[0])
        best = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()
    assert gaps["log_likelihood"] == pytest.approx(exact, abs=0.02)
    # SGD at this step size leaves about 0.06 nats of its own (measured: best 0.019, gap 0.079)
    assert best <= gaps["approximation_gap"] + 0.01 and gaps["approximation_gap"] < best + 0.1
    assert gaps["amortization_gap"] > 0.05
    total = gaps["log_likelihood"] - gaps["elbo_amortized"]
    assert gaps["approximation_gap"] + gaps["amortization_gap"] == pytest.approx(total)


def test_finite_difference_hvps_give_the_exact_unrolled_gradient(float64_story):
    """Kim et al.'s finite-difference backward agrees with differentiating the unrolled steps
    (float64, no clipping: the finite-difference path treats clipping factors as constants)."""
    story, guide, data = float64_story
    batch = data.batch(torch.arange(6))
    checked = [*guide.parameters(), *story.parameters()]
    grads = {}
    for hvp in ("exact", "finite-difference"):
        refinement = Refinement(steps=4, lr=0.1, momentum=0.5, clip_norm=None, hvp=hvp, epsilon=1e-6)
        pyro.set_rng_seed(3)
        lam = refinement.run(story, guide, batch, guide.local_params(batch), differentiable=True)
        grads[hvp] = torch.autograd.grad(negative_elbo(story, guide, batch, lam), checked)
    for exact, fd in zip(grads["exact"], grads["finite-difference"], strict=True):
        assert torch.allclose(exact, fd, rtol=1e-5, atol=1e-7)


def test_a_diverging_refinement_is_reported_as_such():
    story, guide, data = linear_gaussian_setup(num_data=8)
    batch = data.batch(torch.arange(8))
    with pytest.raises(FloatingPointError, match="refinement diverged at step"):
        Refinement(steps=50, lr=50.0, momentum=0.9, clip_norm=None).run(
            story, guide, batch, guide.init_params(8)
        )


def test_a_training_step_refines_on_its_annealed_bound_and_evaluation_on_the_full_one():
    """With W's columns orthogonal, the optimum of E_q[log p(x|z)] - β KL(q || p) over a
    diagonal q is closed-form: loc_j = w_j·(x - b) / σ² / (|w_j|²/σ² + β), scale_j² = β /
    (|w_j|²/σ² + β). A training step refines toward β_t's optimum (the bound it descends),
    evaluation toward β = 1's."""
    story, guide, data = linear_gaussian_setup(num_data=8)
    pyro.set_rng_seed(0)
    refinement = Refinement(steps=600, lr=0.01, momentum=0.5, clip_norm=None)
    svi = StochasticVI(story, guide, refinement, annealing=Constant(0.25))
    batch = data.batch(torch.arange(8))
    weight, variance = story.weight.detach(), story.log_noise.exp().item() ** 2
    precision = (weight**2).sum(0) / variance
    projection = (batch.x - story.bias.detach()) @ weight / variance

    def optimum(beta):
        return projection / (precision + beta), 0.5 * (beta / (precision + beta)).log()

    for lam, beta, other in ((svi.training_params(batch), 0.25, 1.0), (svi.local_params(batch), 1.0, 0.25)):
        loc, log_scale = optimum(beta)
        scale = lam["log_scale"].mean(0)  # the same optimum for every datum: averaged over the 8
        assert (scale - log_scale).abs().max() < 0.08, beta
        assert (lam["loc"] - loc).abs().max() < 0.25, beta
        assert (scale - optimum(other)[1]).abs().min() > 0.4, beta  # not the other bound's
