import inspect
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine

from fabula.diagnostics import psis_khat, to_arviz
from fabula.diagnostics.arviz import az
from fabula.errors import SettingsError, UsageError
from fabula.evaluation import evaluate
from fabula.inference import MCMC, Inference
from fabula.inference.base import Trainable
from fabula.inference.kernels import PyroNUTS, StepKernel
from fabula.inference.pyro_internals import INTERNALS, WRITTEN_FOR
from fabula.traces import sample_sites
from helpers import linear_gaussian_setup


@dataclass
class RandomWalkState:
    story: object
    batch: object
    z: torch.Tensor
    log_joint: torch.Tensor
    accept_prob: torch.Tensor


class RandomWalkMetropolis(StepKernel):
    r"""Random-walk Metropolis per datum: :math:`z' = z + s\,\epsilon`, accepted with probability
    :math:`\min\{1, p(x, z') / p(x, z)\}`, the log joint read from the story's own trace."""

    name = "random-walk Metropolis"

    def __init__(self, scale: float):
        self.scale = scale

    @staticmethod
    @torch.no_grad()
    def log_joint(story, batch, z):
        trace = poutine.trace(poutine.condition(story.model, data={"z": z})).get_trace(batch)
        return sum(site["fn"].log_prob(site["value"]) for site in sample_sites(trace))

    def init(self, story, batch, start, warmup):
        z = start["z"]
        return RandomWalkState(story, batch, z, self.log_joint(story, batch, z), torch.ones(batch.size))

    def sample(self, state):
        proposal = state.z + self.scale * torch.randn_like(state.z)
        log_joint = self.log_joint(state.story, state.batch, proposal)
        accept_prob = (log_joint - state.log_joint).exp().clamp(max=1.0)
        accept = torch.rand_like(accept_prob) < accept_prob
        return RandomWalkState(
            state.story,
            state.batch,
            torch.where(accept[:, None], proposal, state.z),
            torch.where(accept, log_joint, state.log_joint),
            accept_prob,
        )

    def draw(self, state):
        return {"z": state.z}

    def stats(self, state):
        return {"accept_prob": state.accept_prob}


def test_a_kernel_of_one_class_recovers_the_exact_posterior_mean_within_its_monte_carlo_error():
    story, _, data = linear_gaussian_setup(num_data=4)
    batch = data.batch(torch.arange(4))
    mcmc = MCMC(
        story, kernel=RandomWalkMetropolis(0.3), num_samples=3000, warmup=300, num_chains=2, progress=False
    )
    chains = mcmc.run(batch)
    assert chains.samples["z"].shape == (2, 3000, 4, story.latent_dim)
    assert chains.stats["accept_prob"].shape == (2, 3000, 4)  # a per-datum statistic
    idata = to_arviz(mcmc, batch)
    assert idata.sample_stats["accept_prob"].dims == ("chain", "draw", "data")
    ess = torch.as_tensor(az.ess(idata, var_names=["z"])["z"].values)  # [data, dim]
    post = story.posterior(batch.x)
    sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().detach()
    mean = chains.samples["z"].flatten(0, 1).mean(0)
    # the error of a posterior mean estimate is sd / sqrt(ESS); allow 4 of them
    assert ((mean - post.loc.detach()).abs() <= 4 * sd / ess.sqrt()).all()


def test_a_seeded_run_is_reproducible_and_leaves_the_callers_random_stream_alone():
    story, _, data = linear_gaussian_setup(num_data=2)
    batch = data.batch(torch.arange(2))

    def draws(seed, kernel=None, **nuts):
        mcmc = MCMC(story, None, 20, 10, 2, progress=False, seed=seed, kernel=kernel, **nuts)
        return mcmc.run(batch).samples["z"]

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = draws(1, RandomWalkMetropolis(0.3))
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(first, draws(1, RandomWalkMetropolis(0.3)))
    assert not torch.equal(first, draws(2, RandomWalkMetropolis(0.3)))
    assert not torch.equal(first[0], first[1])  # chains have their own seeds
    # the shorthand is the NUTS kernel of its backend
    assert torch.equal(draws(3, backend="pyro", target_accept=0.9), draws(3, PyroNUTS(target_accept=0.9)))


def test_mcmc_samples_and_does_not_train():
    story, guide, data = linear_gaussian_setup(num_data=2)
    mcmc = MCMC(story, guide, progress=False)
    assert isinstance(mcmc, Inference) and mcmc.source is None and mcmc.guide is guide
    assert not hasattr(mcmc, "step") and not hasattr(mcmc, "fit") and not isinstance(mcmc, Trainable)
    with pytest.raises(ValueError, match="MCMC has no variational parameters"):
        mcmc.local_params(data.batch(torch.arange(2)))


def test_nuts_settings_with_an_explicit_kernel_and_a_non_kernel_are_refused():
    story, _, _ = linear_gaussian_setup(num_data=2)
    with pytest.raises(SettingsError, match="backend, target_accept choose the NUTS kernel"):
        MCMC(story, kernel=RandomWalkMetropolis(0.3), backend="numpyro", target_accept=0.9)
    with pytest.raises(SettingsError, match="kernel must be a fabula.inference.kernels.Kernel, got str"):
        MCMC(story, kernel="nuts")


def test_evaluate_and_psis_khat_refuse_mcmc_naming_what_to_use():
    story, guide, data = linear_gaussian_setup(num_data=4)
    mcmc = MCMC(story, guide, progress=False)
    with pytest.raises(
        UsageError, match=r"the iw estimator .* this MCMC has none \(its source is None\).*'exact'"
    ):
        evaluate(mcmc, data, "iw:10")
    with pytest.raises(UsageError, match=r"this MCMC has none \(its source is None\).*to_arviz"):
        psis_khat(mcmc, data.batch(torch.arange(4)))
    assert mcmc.chains is None  # refused before sampling anything


def test_to_arviz_samples_again_for_another_batch():
    story, _, data = linear_gaussian_setup(num_data=5)
    mcmc = MCMC(story, kernel=RandomWalkMetropolis(0.3), num_samples=10, warmup=0, progress=False)
    first = data.batch(torch.arange(2))
    chains = mcmc.run(first)
    assert to_arviz(mcmc, first).posterior["z"].shape == (1, 10, 2, story.latent_dim)
    assert mcmc.chains is chains  # the run on this batch was reused
    assert to_arviz(mcmc, data.batch(torch.arange(2, 5))).posterior["z"].shape[2] == 3


@pytest.mark.parametrize("name", list(INTERNALS))
def test_pyro_still_has_each_private_member_the_recording_nuts_uses(name):
    where = f"pyro {pyro.__version__} (fabula/inference/pyro_internals.py was written for {WRITTEN_FOR})"
    expected = INTERNALS[name]
    if expected is None:
        kernel = pyro.infer.NUTS(lambda: None)
        assert hasattr(kernel, name), f"{where}: NUTS instances no longer have the attribute {name}"
        return
    method = getattr(pyro.infer.NUTS, name, None)
    assert callable(method), f"{where}: pyro.infer.NUTS no longer has the method {name}"
    got = tuple(inspect.signature(method).parameters)
    assert got == expected, f"{where}: NUTS.{name} takes {got}, not {expected}"


def test_pyro_is_pinned_to_the_minor_version_the_internals_were_written_for():
    assert pyro.__version__.startswith(f"{WRITTEN_FOR}."), (
        f"pyro {pyro.__version__} is installed; check fabula/inference/pyro_internals.py against it, "
        "then move WRITTEN_FOR and the pyproject pin"
    )
    major, minor = map(int, WRITTEN_FOR.split("."))
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert f"pyro-ppl>={WRITTEN_FOR},<{major}.{minor + 1}" in project["project"]["dependencies"]
