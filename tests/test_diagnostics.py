import math
import warnings

import pytest
import torch

from fabula.diagnostics import posterior_error, psis_khat, to_arviz
from fabula.diagnostics.arviz import az
from fabula.errors import UsageError
from fabula.evaluation import evaluate
from fabula.inference import MCMC, Amortized, Inference
from fabula.inference.sources import Source
from helpers import linear_gaussian_setup, nvdm_setup


class Fixed(Source):
    """λ given directly per datum (for checking diagnostics)."""

    def __init__(self, guide, params):
        super().__init__(guide)
        self.params = params

    def local_params(self, batch):
        return {k: v[batch.index] for k, v in self.params.items()}


def fixed_q(story, guide, params):
    return Inference(story, Fixed(guide, params))


def exact_q(story, x, shift=0.0, widen=1.0):
    post = story.posterior(x)
    sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    return {"loc": post.loc + shift * sd, "log_scale": (sd * widen).log()}


@pytest.fixture(scope="module", params=MCMC.BACKENDS)
def sampled(request):
    torch.manual_seed(0)
    story, guide, data = linear_gaussian_setup(num_data=3)
    batch = data.batch(torch.arange(3))
    mcmc = MCMC(
        story, guide, num_samples=400, warmup=300, num_chains=2, progress=False, backend=request.param
    )
    mcmc.run(batch)
    return story, guide, batch, mcmc


def test_nuts_recovers_the_analytic_posterior_within_its_monte_carlo_error(sampled):
    story, _, batch, mcmc = sampled
    idata = to_arviz(mcmc, batch)
    ess = torch.as_tensor(az.ess(idata, var_names=["z"])["z"].values)  # [data, dim]
    draws = mcmc.chains.samples["z"].reshape(-1, 3, story.latent_dim)
    post = story.posterior(batch.x)
    sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().detach()
    # the error of a posterior mean estimate is sd / sqrt(ESS); allow 4 of them
    assert ((draws.mean(0) - post.loc.detach()).abs() <= 4 * sd / ess.sqrt()).all()
    # a variance estimate has relative error about sqrt(2 / ESS) with the ESS of (z - mean)^2,
    # which for NUTS is far below that of z (its draws of z are antithetic)
    squares = (mcmc.chains.samples["z"] - post.loc.detach()) ** 2
    ess_sq = torch.as_tensor(az.ess(az.convert_to_dataset({"sq": squares.numpy()}))["sq"].values)
    assert ((draws.var(0) / sd**2 - 1).abs() <= 4 * (2 / ess_sq).sqrt()).all()


def test_mcmc_arviz_groups_dims_statistics_and_r_hat(sampled):
    _, _, batch, mcmc = sampled
    idata = to_arviz(mcmc, batch)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(idata.groups())
    assert idata.posterior["z"].dims == ("chain", "draw", "data", "z_dim_0")
    assert idata.posterior["z"].shape == (2, 400, 3, 3)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "data")
    assert {"energy", "diverging", "step_size", "n_steps", "tree_depth"} <= set(idata.sample_stats)
    assert int(idata.sample_stats["diverging"].sum()) == 0
    summary = az.summary(idata, var_names=["z"])
    assert (summary["r_hat"] < 1.02).all()
    stats = idata.sample_stats
    per_datum = "data" in stats["energy"].dims  # the NumPyro backend's chains are per datum
    assert stats["energy"].dims == ("chain", "draw", "data")[: 2 + per_datum]
    for d in range(3 if per_datum else 1):
        assert math.isfinite(float(az.bfmi(stats.isel(data=d) if per_datum else stats).min()))


def test_variational_arviz_is_one_chain_of_draws_from_q():
    story, guide, corpus = nvdm_setup()
    batch = corpus["test"].batch(torch.arange(5))
    idata = to_arviz(Amortized(story, guide), batch, num_samples=30)
    assert idata.posterior["z"].shape == (1, 30, 5, story.latent_dim)
    assert idata.log_likelihood["x"].shape == (1, 30, 5)
    assert idata.observed_data["x"].dims == ("data", "x_dim_0")
    assert "sample_stats" not in idata.groups()


def test_psis_khat_is_small_for_the_true_posterior_and_large_for_a_misplaced_q():
    story, guide, data = linear_gaussian_setup(num_data=20)
    batch = data.batch(torch.arange(20))
    with torch.no_grad():
        good = psis_khat(fixed_q(story, guide, exact_q(story, data.x)), batch, 1000)
        wide = psis_khat(fixed_q(story, guide, exact_q(story, data.x, widen=1.2)), batch, 1000)
        bad = psis_khat(fixed_q(story, guide, exact_q(story, data.x, shift=3.0, widen=0.5)), batch, 1000)
    # q = p(z|x) gives equal weights (no tail: -inf); a q slightly wider than p(z|x) bounded
    # weights (k-hat < 0.5); a narrow q 3 sd away, heavy-tailed weights (k-hat > 0.7)
    assert good.max() < 0.5 and torch.isfinite(wide).all() and wide.max() < 0.5
    assert bad.min() > 0.7


def test_posterior_error_is_zero_for_equal_draws_and_grows_with_shift_and_spread():
    torch.manual_seed(0)
    ref = torch.randn(4000, 2, 3) * torch.tensor([1.0, 2.0, 0.5])
    same = posterior_error(ref, ref)
    zero = torch.zeros(2, dtype=torch.float64)
    assert torch.allclose(same["mean_error"], zero) and torch.allclose(same["kl"], zero)
    # shifted by one reference sd in every coordinate: mean error 1, KL 3 * 1/2
    shifted = posterior_error(ref + ref.std(0), ref)
    assert torch.allclose(shifted["mean_error"], torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(shifted["kl"], torch.full((2,), 1.5, dtype=torch.float64), atol=1e-6)
    # twice as wide: |log variance ratio| = log 4, KL = 3 * (4 - 1 - log 4) / 2
    wide = posterior_error(2 * (ref - ref.mean(0)) + ref.mean(0), ref)
    assert torch.allclose(wide["log_var_ratio"], torch.full((2,), math.log(4), dtype=torch.float64))
    assert torch.allclose(wide["kl"], torch.full((2,), 1.5 * (3 - math.log(4)), dtype=torch.float64))
    with pytest.raises(ValueError, match="differ after dim 0"):
        posterior_error(ref[:, :1], ref)


def test_exported_posteriors_hold_log_p_x_given_z_alone_and_serve_loo_and_waic(sampled):
    story, guide, batch, mcmc = sampled
    nvdm, nvdm_guide, corpus = nvdm_setup()
    exports = [
        to_arviz(mcmc, batch),
        to_arviz(Amortized(nvdm, nvdm_guide), corpus["test"].batch(torch.arange(6)), 40),
    ]
    for idata in exports:
        assert list(idata.log_likelihood.data_vars) == ["x"]  # the conditioned z is not data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ArviZ's warning on high k-hat of few data
            loo, waic = az.loo(idata), az.waic(idata)
        assert math.isfinite(loo.elpd_loo) and math.isfinite(waic.elpd_waic)
    # the group is log p(x | z): for the linear-Gaussian story, a Gaussian density of x at each draw
    z = mcmc.chains.samples["z"][0, :5]
    noise = torch.distributions.Normal(z @ story.weight.T + story.bias, story.log_noise.exp())
    expected = noise.log_prob(batch.x).sum(-1).detach()
    assert torch.allclose(torch.as_tensor(exports[0].log_likelihood["x"].values[0, :5]), expected, atol=1e-4)


def test_a_samplers_draws_estimate_log_p_x_with_a_fitted_proposal_and_its_khat():
    story, guide, data = linear_gaussian_setup(num_data=3)
    mcmc = MCMC(story, guide, num_samples=300, warmup=200, progress=False)
    torch.manual_seed(0)
    report = evaluate(mcmc, data, "iw-draws:2000")
    exact = -story.log_marginal(data.x).detach()
    # the draws' Student-t proposal is close to p(z|x): the estimate is within a few hundredths
    # of a nat of log p(x), and k-hat says it is reliable
    assert torch.allclose(report.nll, exact, atol=0.03)
    summary = report.summary()
    assert summary["estimator"] == "iw-draws" and summary["khat_max"] < 0.5 and "kl" not in summary
    with pytest.raises(UsageError, match="has a variational q; use iw:S"):
        evaluate(Amortized(story, guide), data, "iw-draws:10")
