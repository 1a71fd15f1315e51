"""NumPyro's NUTS on any story: the generic twin that calls the torch story from JAX, the choice
between it and a registered hand-written twin, and the float64 parity check of a twin."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from jax.scipy.special import gammaln
from torch import nn

import fabula.backends.callback as callback
import fabula.backends.numpyro as numpyro_backend
from fabula.backends.callback import TorchLogJoint, continuous_sites, generic_twin
from fabula.backends.numpyro import Twin, register_twin, twin
from fabula.backends.parity import check_twin
from fabula.data import BagOfWords, Vocab
from fabula.diagnostics import to_arviz
from fabula.diagnostics.arviz import az
from fabula.errors import UsageError
from fabula.evaluation import evaluate
from fabula.inference import MCMC
from fabula.inference.kernels import NumPyroNUTS
from fabula.models import GMVAE, LinearGaussian, Story
from helpers import linear_gaussian_setup, nvdm_setup, orthogonal_linear_gaussian, sentence_setup


class PoissonBag(Story):
    r"""A story fabula does not ship: word counts :math:`x_v \sim \mathrm{Poisson}(\exp(W z + b)_v)`,
    :math:`z \sim \mathcal N(0, I)`."""

    latent_sites = ("z",)

    def __init__(self, vocab_size: int, latent_dim: int = 2):
        super().__init__()
        self.remember(locals())
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, vocab_size)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            pyro.sample("x", dist.Poisson(self.decoder(z).exp()).to_event(1), obs=batch.counts)


def poisson_bag_twin(story, dtype, prior_scale=1.0):
    params = {k: jnp.asarray(v.detach().numpy(), dtype) for k, v in story.decoder.state_dict().items()}

    def log_joint(p, z, datum):
        z, x = z["z"], datum["counts"]
        eta = p["weight"] @ z + p["bias"]
        prior = jnp.sum(jax.scipy.stats.norm.logpdf(z, scale=prior_scale))
        return prior + jnp.sum(x * eta - jnp.exp(eta) - gammaln(x + 1))

    return Twin(
        ("z",), params, log_joint, lambda batch: {"counts": jnp.asarray(batch.counts.numpy(), dtype)}, dtype
    )


def poisson_bag():
    torch.manual_seed(0)
    _, _, corpus = nvdm_setup(vocab_size=12)
    story = PoissonBag(12)
    with torch.no_grad():
        story.decoder.weight.mul_(0.5)
    return story, corpus["train"].batch(torch.arange(5))


@pytest.fixture
def registry(monkeypatch):
    """The twin registry, restored after the test."""
    monkeypatch.setattr(numpyro_backend, "_BUILDERS", dict(numpyro_backend._BUILDERS))


class Tilted(LinearGaussian):
    """A linear-Gaussian story under another class: no twin is registered for it."""


def test_a_story_without_a_twin_is_sampled_by_the_generic_twin_and_matches_its_exact_posterior():
    story = Tilted(6, 3, noise_scale=0.5)
    story.load_state_dict(orthogonal_linear_gaussian().state_dict())
    _, _, data = linear_gaussian_setup(num_data=2)
    batch = data.batch(torch.arange(2))
    mcmc = MCMC(story, num_samples=250, warmup=120, num_chains=2, progress=False, backend="numpyro")
    chains = mcmc.run(batch)
    assert chains.info == {"twin": "generic"}
    attrs = to_arviz(mcmc, batch).posterior.attrs  # what ran travels with the exported draws
    assert (attrs["inference"], attrs["kernel"], attrs["twin"]) == ("MCMC", "NumPyroNUTS", "generic")
    draws = chains.samples["z"]  # [chain, draw, B, K]
    assert draws.shape == (2, 250, 2, 3) and chains.stats["n_steps"].shape == (2, 250, 2)
    post = story.posterior(batch.x)
    mean, var = post.loc.detach(), post.covariance_matrix.diagonal(dim1=-2, dim2=-1).detach()
    ess = torch.as_tensor(az.ess(az.convert_to_dataset({"z": draws.numpy()}))["z"].values)  # [B, K]
    centred = (draws - mean) ** 2
    ess_sq = torch.as_tensor(az.ess(az.convert_to_dataset({"z": centred.numpy()}))["z"].values)
    # errors of a mean and a variance estimate: sd / sqrt(ESS) and var sqrt(2 / ESS); allow 4 of each
    assert ((draws.flatten(0, 1).mean(0) - mean).abs() <= 4 * var.sqrt() / ess.sqrt()).all()
    assert ((centred.flatten(0, 1).mean(0) - var).abs() <= 4 * var * (2 / ess_sq).sqrt()).all()


def test_generic_and_hand_twin_give_the_same_log_joint_and_gradient_on_nvdm_in_float64():
    torch.manual_seed(0)
    story, _, corpus = nvdm_setup()
    story = story.double().eval()
    batch = corpus["train"].batch(torch.arange(6))
    batch.counts = batch.counts.double()
    z = np.random.default_rng(0).normal(size=(3, 6, story.latent_dim)) * 1.5  # [chain, B, K]
    with jax.enable_x64(True):
        results = []
        for jt in (twin(story), generic_twin(story, batch)):
            grad = jax.value_and_grad(lambda z, datum, jt=jt: jt.log_joint(jt.params, z, datum))
            # chains and data vmapped as NUTS does: one torch call serves all 18 lanes
            value, g = jax.jit(jax.vmap(jax.vmap(grad), (0, None)))({"z": z}, jt.data(batch))
            assert value.dtype == np.float64 and value.shape == (3, 6)
            results.append((np.asarray(value), np.asarray(g["z"])))
    (hand, hand_grad), (generic, generic_grad) = results
    np.testing.assert_allclose(generic, hand, rtol=0, atol=1e-8)
    np.testing.assert_allclose(generic_grad, hand_grad, rtol=0, atol=1e-8)


def test_the_kernel_uses_a_registered_twin_else_the_generic_one(registry):
    story, batch = poisson_bag()
    kernel = NumPyroNUTS()
    assert kernel.twin_for(story, batch)[1] == "generic"
    assert register_twin(PoissonBag, poisson_bag_twin) is poisson_bag_twin
    assert check_twin(story, batch)["log_joint"] < 1e-8
    chosen, kind = kernel.twin_for(story, batch)
    assert kind == "hand" and chosen.params  # the hand twin holds the weights as arrays
    assert NumPyroNUTS(twin="generic").twin_for(story, batch)[1] == "generic"
    with pytest.raises(ValueError, match="unknown twin 'fast'"):
        NumPyroNUTS(twin="fast")


def test_check_twin_fails_loudly_on_a_wrong_twin():
    story, batch = poisson_bag()
    wrong = lambda story, dtype: poisson_bag_twin(story, dtype, prior_scale=2.0)  # noqa: E731
    with pytest.raises(
        AssertionError, match=r"the twin of PoissonBag differs from the story in log_joint of datum"
    ):
        check_twin(story, batch, wrong)
    wrong_sites = lambda story, dtype: Twin(("u",), {}, None, None, dtype)  # noqa: E731
    with pytest.raises(
        AssertionError, match=r"samples \('u',\); the story's continuous latents are \('z',\)"
    ):
        check_twin(story, batch, wrong_sites)
    with pytest.raises(TypeError, match="no hand-written NumPyro twin of PoissonBag"):
        check_twin(story, batch)


class PositiveScale(Story):
    r"""A story with a positive latent: :math:`s \sim \mathrm{HalfNormal}(1)`, :math:`x_j \sim \mathcal N(0, s)`."""

    latent_sites = ("s",)

    def __init__(self):
        super().__init__()
        self.register_buffer("prior_scale", torch.ones(()))

    def prior_sample(self, num):
        return {"s": dist.HalfNormal(self.prior_scale).sample((num,))}

    def model(self, batch):
        with self.data_plate(batch):
            s = pyro.sample("s", dist.HalfNormal(self.prior_scale))
            pyro.sample(
                "x",
                dist.Normal(0.0, s[..., None]).expand(s.shape + batch.x.shape[-1:]).to_event(1),
                obs=batch.x,
            )


class DirichletBag(Story):
    r"""A story on the simplex: word probabilities :math:`\theta \sim \mathrm{Dir}(\alpha)`, counts
    :math:`x \sim \mathrm{Mult}(\theta)`; the posterior is :math:`\mathrm{Dir}(\alpha + x)`."""

    latent_sites = ("theta",)

    def __init__(self, vocab_size: int):
        super().__init__()
        self.register_buffer("concentration", torch.full((vocab_size,), 0.5))

    def prior_sample(self, num):
        return {"theta": dist.Dirichlet(self.concentration).sample((num,))}

    def model(self, batch):
        with self.data_plate(batch):
            theta = pyro.sample("theta", dist.Dirichlet(self.concentration))
            pyro.sample("x", dist.Multinomial(probs=theta, validate_args=False), obs=batch.counts)


class OnTheSphere(Story):
    """A latent on the sphere, onto which no unconstrained space is mapped."""

    latent_sites = ("u",)

    def __init__(self):
        super().__init__()
        self.register_buffer("loc", torch.ones(3))

    def model(self, batch):
        with self.data_plate(batch):
            u = pyro.sample("u", dist.ProjectedNormal(self.loc))
            pyro.sample(
                "x", dist.Normal(u.sum(-1, keepdim=True), 1.0).expand(batch.x.shape).to_event(1), obs=batch.x
            )


def within_error(draws: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> bool:
    """Whether each coordinate's mean over ``draws [chain, draw, B, ...]`` is within 4 standard
    errors (sd / sqrt(bulk ESS)) of ``mean``."""
    ess = torch.as_tensor(az.ess(az.convert_to_dataset({"v": draws.numpy()}))["v"].values)
    return bool(((draws.flatten(0, 1).mean(0) - mean).abs() <= 4 * sd / ess.sqrt()).all())


@pytest.mark.thorough
def test_constrained_latents_are_sampled_unconstrained_and_match_their_exact_posteriors():
    torch.manual_seed(0)
    _, _, vectors = linear_gaussian_setup(num_data=3)
    batch = vectors.batch(torch.arange(3))
    kernel = NumPyroNUTS(twin="generic")
    mcmc = MCMC(PositiveScale(), num_samples=400, warmup=200, num_chains=2, progress=False, kernel=kernel)
    draws = mcmc.run(batch).samples["s"]  # [chain, draw, B], on the support
    assert draws.shape == (2, 400, 3) and (draws > 0).all()
    # p(s | x) ∝ exp(-s²/2) s^-d exp(-|x|²/(2 s²)), by quadrature on a fine grid
    s = torch.linspace(1e-3, 12, 200_000, dtype=torch.float64)[:, None]
    d, sq = batch.x.shape[1], batch.x.double().pow(2).sum(-1)
    log_joint = torch.distributions.HalfNormal(1.0).log_prob(s) - d * (s.log() + 0.5 * math.log(2 * math.pi))
    log_joint = log_joint - sq / (2 * s**2)
    weight = (log_joint - log_joint.max(0).values).exp()
    weight = weight / weight.sum(0)
    mean = (weight * s).sum(0)
    sd = ((weight * (s - mean) ** 2).sum(0)).sqrt()
    assert within_error(draws.double(), mean, sd)
    # the proposal fitted to the draws moves in log s, so it never leaves the support
    report = evaluate(mcmc, vectors.subset(torch.arange(3)), "iw-draws:2000")
    log_marginal = torch.logsumexp(log_joint, 0) + (s[1] - s[0]).log()
    assert (report.diagnostics["khat"] < 0.7).all()
    torch.testing.assert_close(-report.nll.double(), log_marginal, atol=0.02, rtol=0)

    story = DirichletBag(5)
    counts = torch.tensor([[3.0, 0, 1, 0, 6], [0, 2, 2, 2, 0]])
    bag = BagOfWords.from_dense(counts, Vocab([f"w{v}" for v in range(5)]))
    theta = MCMC(story, num_samples=400, warmup=200, num_chains=2, progress=False, kernel=kernel)
    theta = theta.run(bag.batch(torch.arange(2))).samples["theta"]  # [chain, draw, B, V]: 4 free coordinates
    assert theta.shape == (2, 400, 2, 5) and torch.allclose(theta.sum(-1), torch.ones(()), atol=1e-5)
    exact = torch.distributions.Dirichlet(0.5 + counts)
    assert within_error(theta.double(), exact.mean.double(), exact.variance.sqrt().double())


def test_the_generic_twin_refuses_discrete_latents_and_supports_without_a_bijection_naming_them():
    gmvae = GMVAE(30, 3, 2, embed_dim=8, hidden_dim=12)
    _, _, text = sentence_setup()
    with pytest.raises(UsageError, match="site 'c0' of GMVAE is discrete"):
        NumPyroNUTS(twin="generic").twin_for(gmvae, text["train"].batch(torch.arange(2)))
    _, _, vectors = linear_gaussian_setup(num_data=2)
    with pytest.raises(UsageError, match="site 'u' of OnTheSphere has support"):
        generic_twin(OnTheSphere(), vectors.batch(torch.arange(2)))


def test_a_generic_twin_serves_only_its_batch():
    story, batch = poisson_bag()
    jt = generic_twin(story, batch)
    assert jt.sites == ("z",) and jt.dtype == np.float32
    with pytest.raises(UsageError, match="made for another batch"):
        jt.data(poisson_bag()[1])


def test_held_lanes_get_their_values_back_and_only_moving_lanes_reach_torch(monkeypatch):
    story, batch = poisson_bag()
    story.eval()
    traced = []
    log_joint = callback.torch_log_joint
    monkeypatch.setattr(
        callback, "torch_log_joint", lambda s, b, v: traced.append(b.size) or log_joint(s, b, v)
    )
    index = np.broadcast_to(np.arange(5), (3, 5))  # 3 chains of 5 data: a datum's chains are repeated rows
    z = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    moved = z.copy()
    moved[0, 1] += 1.0
    potential = TorchLogJoint(story, batch, continuous_sites(story, batch))
    potential.value_and_grad({"z": z}, index)
    value, grad = potential.value_and_grad({"z": moved}, index)
    potential.value_and_grad({"z": z}, index)  # every lane is back where it was: nothing to compute
    assert traced == [15, 1]
    fresh = TorchLogJoint(story, batch, continuous_sites(story, batch))
    fresh_value, fresh_grad = fresh.value_and_grad({"z": moved}, index)
    # (rows evaluated in batches of other sizes may differ in the last bits)
    np.testing.assert_allclose(value, fresh_value, rtol=1e-6)
    np.testing.assert_allclose(grad["z"], fresh_grad["z"], rtol=1e-6, atol=1e-6)
    assert value.shape == (3, 5) and grad["z"].shape == (3, 5, 2)
