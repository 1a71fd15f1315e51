import copy

import pyro
import pytest
import torch
from pyro.distributions import MultivariateNormal

from fabula.guides import NormalGuide
from fabula.inference import Amortized, Refinement, SemiAmortized, StochasticVI
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


def test_unrolled_gradient_matches_finite_differences_of_the_total_derivative():
    torch.set_default_dtype(torch.float64)
    try:
        story = orthogonal_linear_gaussian(data_dim=4, latent_dim=2)
        torch.manual_seed(0)
        from fabula.data import Vectors

        data = Vectors(story.generate(5))
        guide = NormalGuide(4, 2, hidden=[3], activation="tanh")
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
    finally:
        torch.set_default_dtype(torch.float32)


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
