import math

import pytest
import torch

from fabula.errors import SettingsError, UsageError
from fabula.evaluation import (
    ELBO,
    Exact,
    ImportanceWeighted,
    active_units,
    default_estimator,
    elbo_terms,
    evaluate,
    iw_log_likelihood,
    log_weights,
    parse_estimator,
    perplexities,
)
from fabula.evaluation.bounds import chunk_size_for
from fabula.evaluation.estimators import spec_of
from fabula.inference import MCMC, Amortized
from helpers import linear_gaussian_setup, nvdm_setup, sentence_setup


def exact_posterior_params(story, x):
    post = story.posterior(x)
    return {"loc": post.loc, "log_scale": post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().log()}


def test_analytic_kl_agrees_with_monte_carlo():
    story, guide, corpus = nvdm_setup()
    batch = corpus["train"].batch(torch.arange(8))
    _, analytic = elbo_terms(story, guide, batch, num_samples=1, analytic_kl=True)
    S = 20000
    _, mc = elbo_terms(story, guide, batch, num_samples=S, analytic_kl=False)
    # the MC estimate of a 4-d Gaussian KL of this size has per-sample sd well below 3 nats
    assert torch.allclose(mc["z"], analytic["z"], atol=4 * 3 / math.sqrt(S))


def test_iw_bound_is_exact_when_q_is_the_posterior():
    story, guide, data = linear_gaussian_setup(num_data=10)
    batch = data.batch(torch.arange(10))
    params = exact_posterior_params(story, batch.x)
    with torch.no_grad():
        logw = log_weights(story, guide, batch, 7, params)
        assert torch.allclose(logw, story.log_marginal(batch.x).expand(7, -1), atol=1e-4)


def test_iw_bound_exceeds_elbo_and_tightens_with_samples():
    story, guide, data = linear_gaussian_setup(num_data=400)
    batch = data.batch(torch.arange(400))
    with torch.no_grad():
        # a deliberately poor q: the exact posterior mean, scales 2.5x too wide
        params = exact_posterior_params(story, batch.x)
        params["log_scale"] = params["log_scale"] + math.log(2.5)
        exact = story.log_marginal(batch.x).mean()
        recon, kl = elbo_terms(story, guide, batch, 200, params)
        elbo = (recon - kl["z"]).mean()
        one = log_weights(story, guide, batch, 1, params)[0]
        bounds = [iw_log_likelihood(story, guide, batch, s, params).mean() for s in (4, 16, 64)]
    # IW with S=1 is an unbiased estimate of the ELBO: within 4 standard errors of its mean
    assert abs(one.mean() - elbo) < 4 * one.std() / math.sqrt(len(one))
    # data-averaged over 400 data the gaps between successive bounds (> 0.09 nats) dwarf the noise
    assert elbo < bounds[0] < bounds[1] < bounds[2] <= exact + 1e-3


def test_iw_chunks_bound_memory():
    story, guide, corpus = nvdm_setup(vocab_size=40)
    batch = corpus["train"].batch(torch.arange(10))
    assert chunk_size_for(story, batch, 500, max_elements=4000) == 10
    out = iw_log_likelihood(story, guide, batch, 25, chunk=4)
    assert out.shape == (10,) and torch.isfinite(out).all()


def test_perplexity_conventions_by_hand():
    nll = torch.tensor([10.0, 30.0])
    tokens = torch.tensor([5.0, 10.0])
    p = perplexities(nll, tokens)
    assert p["perplexity"] == pytest.approx(math.exp((2 + 3) / 2))
    assert p["corpus_perplexity"] == pytest.approx(math.exp(40 / 15))


def test_active_units_counts_dimensions_with_varying_means():
    means = torch.stack([torch.tensor([0.0, 1.0, 0.001]), torch.tensor([0.0, -1.0, -0.001])])
    assert active_units(means) == 1
    with pytest.raises(ValueError):
        active_units(means[:1])


def test_evaluate_names_its_estimator_and_scores_the_token_sequence():
    story, guide, corpus = nvdm_setup()
    inference = Amortized(story, guide)
    test = corpus["test"]
    torch.manual_seed(5)
    report = evaluate(inference, test, "elbo:3", batch_size=len(test))
    summary = report.summary()
    assert (summary["estimator"], summary["samples"], summary["num_data"]) == ("elbo", 3, 16)
    assert set(summary) >= {"perplexity", "corpus_perplexity", "nll", "kl", "active_units"}
    # the NLL is of the token sequence, as the bag-of-words likelihood scores it (no offset)
    torch.manual_seed(5)
    with torch.no_grad():
        recon, kl = elbo_terms(story, guide, test.batch(torch.arange(len(test))), 3)
    assert torch.allclose(report.nll, kl["z"] - recon, atol=1e-4)
    assert torch.equal(report.tokens, test.lengths)
    assert summary["reconstruction"] == pytest.approx(float(recon.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="unknown estimator"):
        evaluate(inference, test, "bogus")


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("iw:0", "integer >= 1"),
        ("elbo:x", "integer >= 1"),
        ("iw:²", "integer >= 1"),
        ("exact:5", "no samples"),
    ],
)
def test_estimator_specs_refuse_what_they_cannot_mean(spec, problem):
    with pytest.raises(SettingsError, match=problem):
        parse_estimator(spec)


def test_estimator_specs_read_back_as_their_objects():
    for estimator in (ELBO(), ELBO(7), ImportanceWeighted(50), Exact()):
        assert parse_estimator(spec_of(estimator)) == estimator
    assert parse_estimator("iw") == ImportanceWeighted(500)
    with pytest.raises(SettingsError, match="samples must be an integer >= 1"):
        ImportanceWeighted(0)


def test_exact_estimator_scores_the_marginal_and_bounds_lie_below_it():
    story, guide, data = linear_gaussian_setup(num_data=12)
    inference = Amortized(story, guide)
    assert default_estimator(story) == Exact()
    exact = evaluate(inference, data, batch_size=5)
    assert exact.estimator == "exact"
    assert torch.allclose(exact.nll, -story.log_marginal(data.x).detach(), atol=1e-5)
    assert exact.kl is not None  # the guide's diagnostics come with any estimator
    torch.manual_seed(0)
    bounds = [
        evaluate(inference, data, e).nll.mean()
        for e in (ELBO(20), ImportanceWeighted(200), ImportanceWeighted(5000))
    ]
    # -ELBO >= -IW(S) >= -IW(S') >= -log p(x) for S < S' (the untrained q leaves wide gaps)
    assert bounds[0] > bounds[1] > bounds[2] > exact.nll.mean()


def test_exact_estimator_of_a_story_without_latents_equals_its_elbo():
    story, guide, splits = sentence_setup(latent=False)
    inference = Amortized(story, guide)
    assert default_estimator(story) == Exact()
    exact = evaluate(inference, splits["test"]).summary()
    elbo = evaluate(inference, splits["test"], "elbo").summary()
    assert exact["estimator"] == "exact" and exact["kl"] == 0
    assert exact["nll"] == pytest.approx(elbo["nll"], rel=1e-6)


def test_exact_estimator_scores_a_samplers_story_and_refuses_a_story_without_one():
    story, guide, data = linear_gaussian_setup(num_data=4)
    report = evaluate(MCMC(story, guide, progress=False), data, "exact").summary()
    assert set(report) == {"estimator", "samples", "num_data", "nll"}  # no q: no KL, AU or MI
    assert report["nll"] == pytest.approx(-story.log_marginal(data.x).mean().item(), rel=1e-5)
    nvdm, nvdm_guide, corpus = nvdm_setup()
    assert default_estimator(nvdm) == ELBO()
    with pytest.raises(UsageError, match="NVDM has no exact log p"):
        evaluate(Amortized(nvdm, nvdm_guide), corpus["test"], "exact")
