r"""Small stories written the way Pyro's tutorials write models, each with a guide, a tiny
dataset and references computed with Pyro alone, for checking fabula's estimators against Pyro.

Every story follows fabula's contract (:class:`~fabula.models.Story`: local latents in
``self.data_plate(batch)`` at dim -1, ``latent_sites``, ``num_tokens``) but is otherwise
written as a user would: ``pyro.sample``, ``poutine.mask`` and ``poutine.scale``, torch modules
and :class:`~pyro.nn.PyroParam` for its parameters, reductions over ``dim=1`` where a user
would write them. :data:`CASES` lists them; each :class:`UserCase` names what it exercises.

The references (:func:`pyro_elbo`, :func:`pyro_iw`, :func:`exact_log_marginal`) use only Pyro
and torch: Pyro's ELBO classes, Pyro traces scored with ``Trace.compute_log_prob`` (which
applies each site's scale and mask) and brute-force enumeration with ``poutine.condition``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.nn import PyroParam
from pyro.poutine.util import site_is_subsample
from torch import nn

from fabula.data import BagOfWords, Vectors
from fabula.data.corpus import Corpus
from fabula.data.vocab import Vocab
from fabula.guides import EmptyGuide, Guide
from fabula.models import Story

NUM_DATA = 16
"""Data per case: one batch of every estimator."""

FEATURES = frozenset(
    {
        "mask",
        "scale",
        "auxiliary",
        "dependent-guide",
        "discrete",
        "all-discrete",
        "constrained",
        "batchnorm",
        "no-broadcast",
    }
)
"""What a case exercises: ``mask`` (``poutine.mask`` on a site), ``scale`` (``poutine.scale``),
``auxiliary`` (a guide site absent from the model), ``dependent-guide`` (q samples the latents
in another order than the model, conditioning one on another), ``discrete`` (a finite discrete
latent), ``all-discrete`` (every latent finite discrete: log p(x) is a finite sum),
``constrained`` (a latent on a constrained support), ``batchnorm`` (a ``BatchNorm1d`` in the
story), ``no-broadcast`` (the story is right for ``[B, ...]`` latents only, not for draws on a
leading dimension)."""


@dataclass(frozen=True)
class UserCase:
    """One user-like story with its guide and data.

    :param name: the case's name (a test id).
    :param features: what it exercises, a subset of :data:`FEATURES`.
    :param make: builds ``(story, guide, corpus)``, the same objects on every call and without
        touching the caller's random stream: the story (a :class:`~fabula.models.Story`), its
        guide (a :class:`~fabula.guides.Guide`; :class:`~fabula.guides.EmptyGuide` where the
        model sums out every latent itself; ``None`` would ask for the default guide) and a
        corpus of :data:`NUM_DATA` data. Both modules come in training mode, as built.
    :param exact: whether :func:`exact_log_marginal` gives the story's :math:`\\log p(x)`.
    """

    name: str
    features: frozenset[str]
    make: Callable[[], tuple[Story, Guide | None, Corpus]]
    exact: bool = False

    def __post_init__(self):
        unknown = self.features - FEATURES
        if unknown:
            raise ValueError(f"case {self.name!r}: unknown features {sorted(unknown)}")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Draw with torch's global stream seeded, and give the caller's stream back after."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _in_data_plate(batch) -> pyro.plate:
    """The guide's plate over the batch, as fabula's guides open it."""
    return pyro.plate("data", batch.size, dim=-1)


# --------------------------------------------------------------------------------------------
# data: counts with a mask of which were seen; real vectors and bags of words are fabula's own


@dataclass
class CountBatch:
    """Counts ``y[b]`` (float), whether each was seen (``seen[b]``, bool) and the positions."""

    y: torch.Tensor
    seen: torch.Tensor
    index: torch.Tensor

    @property
    def inputs(self) -> torch.Tensor:
        return self.y[:, None]

    @property
    def size(self) -> int:
        return self.y.shape[0]

    def to(self, device) -> CountBatch:
        return CountBatch(self.y.to(device), self.seen.to(device), self.index.to(device))


class Counts(Corpus):
    """A corpus of counts, some of them unseen (masked out of the likelihood)."""

    def __init__(self, y: torch.Tensor, seen: torch.Tensor):
        self.y, self.seen = y.float(), seen.bool()

    def __len__(self) -> int:
        return self.y.shape[0]

    def batch(self, index, device="cpu") -> CountBatch:
        index = torch.as_tensor(index, dtype=torch.long)
        return CountBatch(self.y[index], self.seen[index], index).to(device)

    def _select(self, index: torch.Tensor) -> Counts:
        return Counts(self.y[index], self.seen[index])


def _documents(counts: torch.Tensor) -> BagOfWords:
    return BagOfWords.from_dense(counts.float(), Vocab([f"w{v}" for v in range(counts.shape[-1])]))


def _draw_documents(probs: torch.Tensor, low: int = 12, high: int = 24) -> torch.Tensor:
    """Word counts ``[B, V]`` of documents of ``low..high`` words drawn from ``probs`` ``[B, V]``."""
    lengths = torch.randint(low, high + 1, (probs.shape[0],))
    return torch.stack(
        [dist.Multinomial(int(n), probs=p).sample() for n, p in zip(lengths, probs, strict=True)]
    )


# --------------------------------------------------------------------------------------------
# masked-poisson


class MaskedPoisson(Story):
    r"""Rates with a gamma prior and Poisson counts, of which only the seen ones are scored:

    .. math:: \lambda_b \sim \mathrm{Gamma}(2, 1), \qquad
              y_b \mid \lambda_b \sim \mathrm{Poisson}(3 \lambda_b)^{m_b}

    with :math:`m_b` = ``batch.seen[b]`` (``poutine.mask``). The marginal of a seen count is
    :math:`\mathrm{GammaPoisson}(2, 1/3)`, of an unseen one 1.
    """

    latent_sites = ("lam",)

    def __init__(self, concentration: float = 2.0, rate: float = 1.0, exposure: float = 3.0):
        super().__init__()
        self.remember(locals())
        self.register_buffer("concentration", torch.tensor(concentration))
        self.register_buffer("rate", torch.tensor(rate))
        self.exposure = exposure

    def model(self, batch):
        with self.data_plate(batch):
            lam = pyro.sample("lam", dist.Gamma(self.concentration, self.rate))
            with poutine.mask(mask=batch.seen):
                pyro.sample("y", dist.Poisson(self.exposure * lam), obs=batch.y)


class LogNormalRateGuide(Guide):
    r""":math:`q(\lambda_b) = \mathrm{LogNormal}(\mu_b, \sigma_b)` with
    :math:`(\mu_b, \log\sigma_b)` a linear map of :math:`\log(1 + y_b)`."""

    def __init__(self):
        super().__init__()
        self.remember({})
        self.net = nn.Linear(1, 2)

    def local_params(self, batch):
        loc, log_scale = self.net(torch.log1p(batch.y)[:, None]).unbind(-1)
        return {"loc": loc, "log_scale": log_scale}

    def init_params(self, num, device="cpu"):
        zeros = torch.zeros(num, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params=None):
        params = self.local_params(batch) if params is None else params
        with _in_data_plate(batch):
            pyro.sample("lam", dist.LogNormal(params["loc"], params["log_scale"].exp()))


def make_masked_poisson(seed: int = 0):
    with _seeded(seed):
        story, guide = MaskedPoisson(), LogNormalRateGuide()
        with torch.no_grad():  # near the posterior Gamma(2 + y, 4) of a seen count
            guide.net.weight.copy_(torch.tensor([[0.8], [-0.45]]))
            guide.net.bias.copy_(torch.tensor([-0.9, -0.3]))
        lam = dist.Gamma(2.0, 1.0).sample((NUM_DATA,))
        y = dist.Poisson(3.0 * lam).sample()
        seen = torch.rand(NUM_DATA) < 0.7
        seen[:2] = torch.tensor([True, False])  # both kinds whatever the draw
    return story, guide, Counts(y, seen)


# --------------------------------------------------------------------------------------------
# scaled


class ScaledGaussian(Story):
    r"""A linear-Gaussian story whose likelihood is down-weighted by ``poutine.scale``:

    .. math:: z_b \sim \mathcal N(0, I_K), \qquad
              \log p(x_b \mid z_b) \text{ counted } s \text{ times},\;
              x_b \mid z_b \sim \mathcal N(W z_b + c, \sigma^2 I_D)

    with :math:`s` = ``likelihood_scale`` and :math:`\sigma` a positive ``PyroParam``.
    """

    latent_sites = ("z",)

    def __init__(self, data_dim: int = 3, latent_dim: int = 2, likelihood_scale: float = 0.5):
        super().__init__()
        self.remember(locals())
        self.likelihood_scale = likelihood_scale
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.noise = PyroParam(torch.tensor(0.5), constraint=constraints.positive)
        self.register_buffer("zeros", torch.zeros(latent_dim))

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            with poutine.scale(scale=self.likelihood_scale):
                pyro.sample("x", dist.Normal(self.decoder(z), self.noise).to_event(1), obs=batch.x)


class LinearNormalGuide(Guide):
    r""":math:`q(z_b) = \mathcal N(\mu_b, \mathrm{diag}\,\sigma_b^2)`, :math:`(\mu_b, \log\sigma_b)`
    a linear map of ``batch.inputs`` (``log1p`` of counts when ``counts``)."""

    def __init__(self, in_features: int, latent_dim: int, counts: bool = False, site: str = "z"):
        super().__init__()
        self.remember(locals())
        self.latent_dim, self.counts, self.site = latent_dim, counts, site
        self.net = nn.Linear(in_features, 2 * latent_dim)

    def local_params(self, batch):
        x = torch.log1p(batch.inputs) if self.counts else batch.inputs
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def init_params(self, num, device="cpu"):
        zeros = torch.zeros(num, self.latent_dim, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params=None):
        params = self.local_params(batch) if params is None else params
        with _in_data_plate(batch):
            pyro.sample(self.site, dist.Normal(params["loc"], params["log_scale"].exp()).to_event(1))


def make_scaled(seed: int = 0):
    with _seeded(seed):
        story, guide = ScaledGaussian(), LinearNormalGuide(3, 2)
        with torch.no_grad():  # near p(z | x) under the scaled likelihood
            W, c, s = story.decoder.weight, story.decoder.bias, story.likelihood_scale
            cov = torch.linalg.inv(torch.eye(2) + s * W.T @ W / story.noise**2)
            gain = cov @ W.T * s / story.noise**2
            guide.net.weight.copy_(torch.cat([gain, torch.zeros(2, 3)]) * (1 + 0.1 * torch.randn(4, 3)))
            guide.net.bias.copy_(torch.cat([-gain @ c, 0.5 * cov.diagonal().log() + 0.1]))
            z = torch.randn(NUM_DATA, 2)
            x = story.decoder(z) + 0.5 * torch.randn(NUM_DATA, 3)
    return story, guide, Vectors(x)


# --------------------------------------------------------------------------------------------
# auxiliary-guide and guide-only-site


class StandardGaussian(Story):
    r""":math:`z_b \sim \mathcal N(0, I_D)`, :math:`x_b \mid z_b \sim \mathcal N(z_b, I_D)`, so
    :math:`x_b \sim \mathcal N(0, 2 I_D)`."""

    latent_sites = ("z",)

    def __init__(self, dim: int = 2):
        super().__init__()
        self.remember(locals())
        self.register_buffer("zeros", torch.zeros(dim))

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=batch.x)


class AuxiliaryGuide(Guide):
    r"""A guide with a site the model lacks:

    .. math:: a_b \sim \mathrm{Beta}(2, 2)^D, \qquad
              z_b \mid a_b \sim \mathcal N(\mu_b + w \odot (a_b - \tfrac12), \mathrm{diag}\,\sigma_b^2)

    marked ``infer={"is_auxiliary": True}`` when ``marked``. Pyro's ELBO scores a guide-only
    site by :math:`-\log q(a)` alone; with :math:`a` on :math:`(0, 1)^D` that is the auxiliary
    bound with :math:`r(a \mid x, z) = \mathrm{Uniform}(0, 1)^D` (density 1), so the ELBO and
    the importance-weighted bound :math:`\log \frac1S \sum_s p(x, z_s) / q(a_s, z_s)` stay
    bounds on :math:`\log p(x)`.
    """

    def __init__(self, dim: int = 2, marked: bool = True):
        super().__init__()
        self.remember(locals())
        self.dim, self.marked = dim, marked
        self.net = nn.Linear(dim, 2 * dim)
        self.mix = nn.Parameter(torch.full((dim,), 0.6))
        self.register_buffer("two", torch.full((dim,), 2.0))

    def local_params(self, batch):
        loc, log_scale = self.net(batch.x).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def init_params(self, num, device="cpu"):
        zeros = torch.zeros(num, self.dim, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params=None):
        params = self.local_params(batch) if params is None else params
        infer = {"is_auxiliary": True} if self.marked else {}
        with _in_data_plate(batch):
            a = pyro.sample("a", dist.Beta(self.two, self.two).to_event(1), infer=infer)
            loc = params["loc"] + self.mix * (a - 0.5)
            pyro.sample("z", dist.Normal(loc, params["log_scale"].exp()).to_event(1))


def make_auxiliary(marked: bool, seed: int = 0):
    with _seeded(seed):
        story, guide = StandardGaussian(2), AuxiliaryGuide(2, marked)
        with torch.no_grad():  # near p(z | x) = N(x / 2, I / 2)
            guide.net.weight.copy_(torch.cat([0.5 * torch.eye(2), torch.zeros(2, 2)]))
            guide.net.weight.add_(0.1 * torch.randn(4, 2))
            guide.net.bias.copy_(torch.tensor([0.0, 0.0, -0.45, -0.45]))
        x = math.sqrt(2.0) * torch.randn(NUM_DATA, 2)
    return story, guide, Vectors(x)


# --------------------------------------------------------------------------------------------
# dependent-guide


class Chain(Story):
    r"""Two scalar latents in a chain and their noisy sum:

    .. math:: z_1 \sim \mathcal N(0, 1), \quad z_2 \mid z_1 \sim \mathcal N(z_1, 1), \quad
              x \mid z \sim \mathcal N(z_1 + z_2, 0.5^2)

    so :math:`x \sim \mathcal N(0, 5.25)`.
    """

    latent_sites = ("z1", "z2")

    def __init__(self, noise: float = 0.5):
        super().__init__()
        self.remember(locals())
        self.noise = noise
        self.register_buffer("zero", torch.tensor(0.0))

    def model(self, batch):
        with self.data_plate(batch):
            z1 = pyro.sample("z1", dist.Normal(self.zero, 1.0))
            z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
            pyro.sample("x", dist.Normal((z1 + z2)[..., None], self.noise).to_event(1), obs=batch.x)


class ReversedChainGuide(Guide):
    r""":math:`q(z_2) = \mathcal N(\mu_b, \sigma_b^2)` first, then
    :math:`q(z_1 \mid z_2) = \mathcal N(\rho z_2 + \nu_b, \tau_b^2)`: the model's order reversed,
    so :math:`z_1` depends on :math:`z_2` under q (the mean-field ELBO's analytic KL of each
    site, taken at the other's draw, is then biased). :math:`\rho` is a global parameter, the
    rest a linear map of :math:`x`."""

    def __init__(self):
        super().__init__()
        self.remember({})
        self.net = nn.Linear(1, 4)
        self.rho = nn.Parameter(torch.tensor(0.0))

    def local_params(self, batch):
        z2_loc, z2_log_scale, z1_shift, z1_log_scale = self.net(batch.x).unbind(-1)
        return {
            "z2_loc": z2_loc,
            "z2_log_scale": z2_log_scale,
            "z1_shift": z1_shift,
            "z1_log_scale": z1_log_scale,
        }

    def init_params(self, num, device="cpu"):
        return {
            k: torch.zeros(num, device=device) for k in ("z2_loc", "z2_log_scale", "z1_shift", "z1_log_scale")
        }

    def forward(self, batch, params=None):
        params = self.local_params(batch) if params is None else params
        with _in_data_plate(batch):
            z2 = pyro.sample("z2", dist.Normal(params["z2_loc"], params["z2_log_scale"].exp()))
            loc = self.rho * z2 + params["z1_shift"]
            pyro.sample("z1", dist.Normal(loc, params["z1_log_scale"].exp()))


def make_dependent(seed: int = 0):
    with _seeded(seed):
        story, guide = Chain(), ReversedChainGuide()
        with (
            torch.no_grad()
        ):  # near p(z2 | x) = N(0.57 x, 0.53^2), p(z1 | z2, x) = N(-z2 / 2 + 2 x / 3, 0.41^2)
            guide.net.weight.copy_(torch.tensor([[0.5], [0.0], [0.6], [0.0]]))
            guide.net.bias.copy_(torch.tensor([0.05, -0.5, -0.05, -0.8]))
            guide.rho.fill_(-0.3)
        x = math.sqrt(5.25) * torch.randn(NUM_DATA, 1)
    return story, guide, Vectors(x)


# --------------------------------------------------------------------------------------------
# mixture-of-unigrams (guided and enumerated)


class MixtureOfUnigrams(Story):
    r"""Each document's words from one of K word distributions:

    .. math:: c_b \sim \mathrm{Cat}(\pi), \qquad x_b \mid c_b \sim \mathrm{Mult}(N, \beta_{c_b})

    with :math:`\pi = \mathrm{softmax}(\alpha)`, :math:`\beta_k = \mathrm{softmax}(\eta_k)` module
    parameters and :math:`N` the batch's longest document (as Pyro's ProdLDA tutorial; the
    multinomial scores each document's own total). With ``enumerate`` the model marks
    :math:`c` ``infer={"enumerate": "parallel"}`` and sums it out itself.
    """

    latent_sites = ("c",)

    def __init__(self, vocab_size: int = 10, num_components: int = 3, enumerate: bool = False):
        super().__init__()
        self.remember(locals())
        self.enumerate = enumerate
        self.mixture_logits = nn.Parameter(0.3 * torch.randn(num_components))
        self.word_logits = nn.Parameter(1.5 * torch.randn(num_components, vocab_size))

    def model(self, batch):
        pi = F.softmax(self.mixture_logits, -1)
        beta = F.softmax(self.word_logits, -1)
        total_count = int(batch.counts.sum(-1).max())
        infer = {"enumerate": "parallel"} if self.enumerate else {}
        with self.data_plate(batch):
            c = pyro.sample("c", dist.Categorical(pi), infer=infer)
            pyro.sample("x", dist.Multinomial(total_count, probs=beta[c]), obs=batch.counts)

    def num_tokens(self, batch):
        return batch.counts.sum(-1)


class ComponentGuide(Guide):
    r""":math:`q(c_b) = \mathrm{Cat}(\mathrm{softmax}(\ell_b))`, :math:`\ell_b` a linear map of
    :math:`\log(1 + x_b)`, marked ``infer={"enumerate": "parallel"}`` as fabula's guides are."""

    def __init__(self, vocab_size: int = 10, num_components: int = 3):
        super().__init__()
        self.remember(locals())
        self.num_components = num_components
        self.net = nn.Linear(vocab_size, num_components)

    def local_params(self, batch):
        return {"logits": self.net(torch.log1p(batch.counts))}

    def init_params(self, num, device="cpu"):
        return {"logits": torch.zeros(num, self.num_components, device=device)}

    def forward(self, batch, params=None):
        params = self.local_params(batch) if params is None else params
        with _in_data_plate(batch):
            pyro.sample("c", dist.Categorical(logits=params["logits"]), infer={"enumerate": "parallel"})


def make_mixture_of_unigrams(enumerate: bool, seed: int = 0):
    with _seeded(seed):
        story = MixtureOfUnigrams(10, 3, enumerate=enumerate)
        with torch.no_grad():  # the same data for both variants
            c = dist.Categorical(logits=story.mixture_logits).sample((NUM_DATA,))
            counts = _draw_documents(F.softmax(story.word_logits, -1)[c])
        guide = EmptyGuide() if enumerate else ComponentGuide(10, 3)
        if not enumerate:  # q(c | x) a rough fit: tempered log-likelihoods of the components
            with torch.no_grad():
                guide.net.weight.copy_(0.8 * F.log_softmax(story.word_logits, -1))
                guide.net.bias.zero_()
    return story, guide, _documents(counts)


# --------------------------------------------------------------------------------------------
# gaussian-mixture-latent


class GaussianMixtureLatent(Story):
    r"""A component and a code per datum, the component summed out by the model:

    .. math:: c_b \sim \mathrm{Cat}(\pi), \quad z_b \mid c_b \sim \mathcal N(\mu_{c_b}, I_2),
              \quad x_b \mid z_b \sim \mathcal N(z_b, 0.5^2 I_2)

    with :math:`c` marked ``infer={"enumerate": "parallel"}``; the guide samples :math:`z`
    only. So :math:`x_b \sim \sum_k \pi_k \mathcal N(\mu_k, 1.25\, I_2)`.
    """

    latent_sites = ("c", "z")

    def __init__(self, num_components: int = 3, dim: int = 2, noise: float = 0.5):
        super().__init__()
        self.remember(locals())
        self.noise = noise
        self.mixture_logits = nn.Parameter(0.3 * torch.randn(num_components))
        self.means = nn.Parameter(2.0 * torch.randn(num_components, dim))

    def model(self, batch):
        pi = F.softmax(self.mixture_logits, -1)
        with self.data_plate(batch):
            c = pyro.sample("c", dist.Categorical(pi), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(self.means[c], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, self.noise).to_event(1), obs=batch.x)


def make_gaussian_mixture(seed: int = 0):
    with _seeded(seed):
        story, guide = GaussianMixtureLatent(), LinearNormalGuide(2, 2)
        with torch.no_grad():  # q(z | x) = N(0.8 x, 0.45^2): the posterior given the component
            guide.net.weight.copy_(torch.cat([0.8 * torch.eye(2), torch.zeros(2, 2)]))
            guide.net.bias.copy_(torch.tensor([0.0, 0.0, -0.8, -0.8]))
            c = dist.Categorical(logits=story.mixture_logits).sample((NUM_DATA,))
            x = story.means[c] + math.sqrt(1.25) * torch.randn(NUM_DATA, 2)
    return story, guide, Vectors(x)


# --------------------------------------------------------------------------------------------
# batchnorm-decoder: Pyro's ProdLDA tutorial, small


class Encoder(nn.Module):
    """The ProdLDA tutorial's encoder: softplus layers, then batch-normalised mean and log-variance."""

    def __init__(self, vocab_size, num_topics, hidden, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fcmu = nn.Linear(hidden, num_topics)
        self.fclv = nn.Linear(hidden, num_topics)
        self.bnmu = nn.BatchNorm1d(num_topics, affine=False)
        self.bnlv = nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, inputs):
        h = F.softplus(self.fc1(inputs))
        h = F.softplus(self.fc2(h))
        h = self.drop(h)
        logtheta_loc = self.bnmu(self.fcmu(h))
        logtheta_logvar = self.bnlv(self.fclv(h))
        logtheta_scale = (0.5 * logtheta_logvar).exp()
        return logtheta_loc, logtheta_scale


class Decoder(nn.Module):
    """The ProdLDA tutorial's decoder: ``softmax(BatchNorm1d(Linear(theta)), dim=1)``."""

    def __init__(self, vocab_size, num_topics, dropout):
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs):
        inputs = self.drop(inputs)
        return F.softmax(self.bn(self.beta(inputs)), dim=1)


class ProdLDA(Story):
    r"""Pyro's ProdLDA tutorial (Srivastava & Sutton 2017), small:

    .. math:: \log\theta_b \sim \mathcal N(0, I_K), \qquad
              x_b \mid \theta_b \sim \mathrm{Mult}(N, \mathrm{softmax}(\mathrm{BN}(\beta\,
              \mathrm{softmax}(\log\theta_b))))

    The decoder's ``BatchNorm1d`` reads dim 1 as its channels and its softmax normalises over
    dim 1: right for ``[B, K]`` latents only. In evaluation mode the batch norm uses its
    running statistics (set as if trained), so data are scored independently.

    References: A. Srivastava, C. Sutton. Autoencoding Variational Inference for Topic Models. ICLR 2017.
    """

    latent_sites = ("logtheta",)

    def __init__(self, vocab_size: int = 10, num_topics: int = 3, dropout: float = 0.2):
        super().__init__()
        self.remember(locals())
        self.num_topics = num_topics
        self.decoder = Decoder(vocab_size, num_topics, dropout)

    def model(self, batch):
        docs = batch.counts
        with self.data_plate(batch):
            logtheta_loc = docs.new_zeros((docs.shape[0], self.num_topics))
            logtheta_scale = docs.new_ones((docs.shape[0], self.num_topics))
            logtheta = pyro.sample("logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))
            theta = F.softmax(logtheta, -1)
            count_param = self.decoder(theta)
            total_count = int(docs.sum(-1).max())
            pyro.sample("obs", dist.Multinomial(total_count, count_param), obs=docs)

    def num_tokens(self, batch):
        return batch.counts.sum(-1)


class ProdLDAGuide(Guide):
    r"""The tutorial's guide: :math:`q(\log\theta_b) = \mathcal N(\mu_b, \mathrm{diag}\,\sigma_b^2)`
    from :class:`Encoder` of the counts."""

    def __init__(self, vocab_size: int = 10, num_topics: int = 3, hidden: int = 8, dropout: float = 0.2):
        super().__init__()
        self.remember(locals())
        self.num_topics = num_topics
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)

    def local_params(self, batch):
        loc, scale = self.encoder(batch.counts)
        return {"loc": loc, "log_scale": scale.log()}

    def init_params(self, num, device="cpu"):
        zeros = torch.zeros(num, self.num_topics, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params=None):
        params = self.local_params(batch) if params is None else params
        with _in_data_plate(batch):
            pyro.sample("logtheta", dist.Normal(params["loc"], params["log_scale"].exp()).to_event(1))


def make_prodlda(seed: int = 0):
    with _seeded(seed):
        story, guide = ProdLDA(10, 3), ProdLDAGuide(10, 3, hidden=8)
        with torch.no_grad():  # running statistics as if trained
            bns = (story.decoder.bn, guide.encoder.bnmu, guide.encoder.bnlv)
            for bn in bns:
                bn.running_mean.copy_(0.2 * torch.randn_like(bn.running_mean))
                bn.running_var.copy_(torch.empty_like(bn.running_var).uniform_(0.5, 1.5))
            story.decoder.beta.weight.mul_(4.0)
            guide.encoder.bnlv.running_mean.fill_(1.5)  # q's scales about 0.5
            theta = F.softmax(torch.randn(NUM_DATA, 3), -1)
            probs = story.decoder.eval()(theta)
            story.decoder.train()
            counts = _draw_documents(probs)
    return story, guide, _documents(counts)


# --------------------------------------------------------------------------------------------
# no-broadcast


class SoftmaxTopics(Story):
    r"""Logistic-normal topic proportions written with ``softmax(..., dim=1)``:

    .. math:: z_b \sim \mathcal N(0, I_K), \quad \theta_b = \mathrm{softmax}(z_b), \quad
              x_b \mid z_b \sim \mathrm{Mult}(N, \theta_b^\top \mathrm{softmax}(\eta))

    Right for ``[B, K]`` latents; on ``[S, B, K]`` the softmax runs over the data instead of
    the topics, and the multinomial (given logits) silently renormalises the wrong numbers.
    """

    latent_sites = ("z",)

    def __init__(self, vocab_size: int = 10, num_topics: int = 3):
        super().__init__()
        self.remember(locals())
        self.topic_logits = nn.Parameter(1.5 * torch.randn(num_topics, vocab_size))
        self.register_buffer("zeros", torch.zeros(num_topics))

    def model(self, batch):
        total_count = int(batch.counts.sum(-1).max())
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            theta = F.softmax(z, dim=1)
            words = theta @ F.softmax(self.topic_logits, dim=1)
            pyro.sample("x", dist.Multinomial(total_count, logits=words.log()), obs=batch.counts)

    def num_tokens(self, batch):
        return batch.counts.sum(-1)


def make_softmax_topics(seed: int = 0):
    with _seeded(seed):
        story, guide = SoftmaxTopics(10, 3), LinearNormalGuide(10, 3, counts=True)
        with torch.no_grad():
            guide.net.weight.mul_(0.5)
            guide.net.bias[3:].fill_(-0.5)
            theta = F.softmax(torch.randn(NUM_DATA, 3), -1)
            probs = theta @ F.softmax(story.topic_logits, -1)
            counts = _draw_documents(probs)
    return story, guide, _documents(counts)


# --------------------------------------------------------------------------------------------
# the cases

CASES: tuple[UserCase, ...] = (
    UserCase("masked-poisson", frozenset({"mask", "constrained"}), make_masked_poisson, exact=True),
    UserCase("scaled", frozenset({"scale"}), make_scaled, exact=True),
    UserCase("auxiliary-guide", frozenset({"auxiliary"}), lambda: make_auxiliary(marked=True), exact=True),
    UserCase("guide-only-site", frozenset({"auxiliary"}), lambda: make_auxiliary(marked=False), exact=True),
    UserCase("dependent-guide", frozenset({"dependent-guide"}), make_dependent, exact=True),
    UserCase(
        "mixture-of-unigrams",
        frozenset({"discrete", "all-discrete"}),
        lambda: make_mixture_of_unigrams(enumerate=False),
        exact=True,
    ),
    UserCase(
        "mixture-of-unigrams-enumerated",
        frozenset({"discrete", "all-discrete"}),
        lambda: make_mixture_of_unigrams(enumerate=True),
        exact=True,
    ),
    UserCase("gaussian-mixture-latent", frozenset({"discrete"}), make_gaussian_mixture, exact=True),
    UserCase("batchnorm-decoder", frozenset({"batchnorm", "no-broadcast"}), make_prodlda),
    UserCase("no-broadcast", frozenset({"no-broadcast"}), make_softmax_topics),
)
"""Every user-like case, by name in :func:`case`."""


def case(name: str) -> UserCase:
    """The case called ``name``."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no user-like case {name!r}; choose from {', '.join(c.name for c in CASES)}")


# --------------------------------------------------------------------------------------------
# Pyro references

NO_BROADCAST = (ProdLDA, SoftmaxTopics)
"""Stories that are right only for ``[B, ...]`` latents: the references draw them one at a time."""

MAX_DRAWS_ONE_AT_A_TIME = 400
"""The most draws :func:`pyro_elbo` takes one trace at a time (for a story in :data:`NO_BROADCAST`)."""

_GUIDE_ONLY = "Found non-auxiliary vars in guide but not model"


def broadcasts(story) -> bool:
    """Whether ``story`` is right with draws on a dimension left of its data plate."""
    return not isinstance(story, NO_BROADCAST)


@contextmanager
def _reference(story, guide, seed: int) -> Iterator[None]:
    """Evaluation mode for both modules, no gradients, torch's stream seeded (the caller's
    stream given back), and Pyro's warning about an unmarked guide-only site silenced."""
    modules = [m for m in (story, guide) if m is not None]
    before = [[sub.training for sub in m.modules()] for m in modules]
    for m in modules:
        m.eval()
    try:
        with _seeded(seed), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_GUIDE_ONLY)
            yield
    finally:
        for m, flags in zip(modules, before, strict=True):
            for sub, flag in zip(m.modules(), flags, strict=True):
                sub.training = flag


def _guide_fn(guide):
    return guide if guide is not None else EmptyGuide()


def _sample_sites(trace) -> list[dict]:
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _enumerates(story, guide, batch) -> bool:
    """Whether the model or the guide marks a site ``infer={"enumerate": ...}``."""
    guide_trace = poutine.trace(guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(story.model, trace=guide_trace)).get_trace(batch)
    return any(s["infer"].get("enumerate") for t in (guide_trace, model_trace) for s in _sample_sites(t))


def pyro_elbo(
    story,
    guide,
    batch,
    num_particles: int = 20000,
    seed: int = 0,
    elbo: type | None = None,
    groups: int = 20,
) -> tuple[float, float]:
    r"""Pyro's ELBO of ``batch`` (summed over its data) and its standard error: ``(value, stderr)``.

    The estimator is ``elbo`` (a Pyro ELBO class); by default ``TraceEnum_ELBO`` when the model
    or the guide marks a site for enumeration (those sites are then summed out exactly),
    else ``Trace_ELBO``, with ``max_plate_nesting=1``. Story and guide are in evaluation mode.

    The value is the mean of ``groups`` independent ``-loss`` calls, each with
    ``num_particles / groups`` particles vectorised on a plate left of the data plate; the
    standard error is their standard deviation over :math:`\sqrt{\text{groups}}` (batch
    means). A story that does not broadcast (:func:`broadcasts`) is scored one particle per
    call instead (``vectorize_particles=False``), with at most
    :data:`MAX_DRAWS_ONE_AT_A_TIME` calls, so each reference takes well under a second.
    A batch whose every latent is summed out has standard error 0.
    """
    guide = _guide_fn(guide)
    with _reference(story, guide, seed):
        if elbo is None:
            elbo = TraceEnum_ELBO if _enumerates(story, guide, batch) else Trace_ELBO
        if broadcasts(story):
            per_group = max(1, math.ceil(num_particles / groups))
            loss = elbo(num_particles=per_group, vectorize_particles=True, max_plate_nesting=1)
        else:
            groups = max(2, min(num_particles, MAX_DRAWS_ONE_AT_A_TIME))
            loss = elbo(num_particles=1, vectorize_particles=False, max_plate_nesting=1)
        values = torch.tensor(
            [-loss.loss(story.model, guide, batch) for _ in range(groups)], dtype=torch.float64
        )
    return float(values.mean()), float(values.std() / math.sqrt(groups))


def _per_datum(trace, batch_size: int) -> torch.Tensor:
    r""":math:`\sum_{\text{sites}} \log p` per datum (``[..., B]``), each site's log-density
    with its scale and mask applied (``Trace.compute_log_prob``)."""
    trace.compute_log_prob()
    total = torch.zeros(batch_size, dtype=torch.float64)
    for site in _sample_sites(trace):
        log_prob = site["log_prob"]
        if log_prob.shape[-1:] != (batch_size,):
            raise ValueError(
                f"site {site['name']!r} has log-density shape {tuple(log_prob.shape)}: not per datum of the batch"
            )
        total = total + log_prob.double()
    return total


def _summed_out(model_trace, guide_trace) -> list[dict]:
    """The model's latent sites the guide does not sample: they must be marked for enumeration."""
    out = []
    for site in _sample_sites(model_trace):
        if site["is_observed"] or site["name"] in guide_trace.nodes:
            continue
        if not (site["infer"].get("enumerate") and site["fn"].has_enumerate_support):
            raise ValueError(f"model site {site['name']!r} is neither sampled by the guide nor enumerable")
        out.append(site)
    return out


def _log_joint_summed(model, batch, guide_trace, sites: list[dict]) -> torch.Tensor:
    r""":math:`\log \sum_{c} p(x, z, c)` per datum at the guide's draws ``z``, the sum over every
    value of the enumerated ``sites`` (their cartesian product), each a conditioned trace."""
    supports = [s["fn"].enumerate_support(expand=False) for s in sites]
    terms = []
    for values in itertools.product(*supports):
        data = {s["name"]: v.expand(s["value"].shape) for s, v in zip(sites, values, strict=True)}
        conditioned = poutine.condition(model, data=data)
        trace = poutine.trace(poutine.replay(conditioned, trace=guide_trace)).get_trace(batch)
        terms.append(_per_datum(trace, batch.size))
    return torch.logsumexp(torch.stack(terms), 0)


def _log_weights(story, guide, batch) -> torch.Tensor:
    r"""One draw :math:`\log p(x, z) - \log q(z)` per datum at every leading dimension the
    caller's plates add (sites the model sums out are summed by :func:`_log_joint_summed`)."""
    guide_trace = poutine.trace(guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(story.model, trace=guide_trace)).get_trace(batch)
    summed = _summed_out(model_trace, guide_trace)
    if summed:
        log_p = _log_joint_summed(story.model, batch, guide_trace, summed)
    else:
        log_p = _per_datum(model_trace, batch.size)
    return log_p - _per_datum(guide_trace, batch.size)


def pyro_iw(
    story,
    guide,
    batch,
    num_samples: int,
    seed: int = 0,
    vectorize: bool | None = None,
    per_datum: bool = False,
):
    r"""The importance-weighted bound :math:`\sum_b \log \frac1S \sum_s w_{s,b}` of ``batch``
    (a float; with ``per_datum`` the ``[B]`` terms), built from Pyro traces:

    .. math:: \log w_{s,b} = \sum_{\text{model sites}} \log p - \sum_{\text{guide sites}} \log q

    per datum, each site's log-density from ``Trace.compute_log_prob`` (its scale and mask
    applied, as Pyro's ELBOs do; a guide-only site counts :math:`-\log q`). Sites the model
    marks for enumeration and the guide does not sample are summed out exactly at each draw,
    one conditioned trace per value. Draws are ``S`` traces one at a time for a story that does
    not broadcast (:func:`broadcasts`), else one trace under a ``"particles"`` plate at dim -2
    (``vectorize`` overrides the choice). Story and guide are in evaluation mode.
    """
    guide = _guide_fn(guide)
    vectorize = broadcasts(story) if vectorize is None else vectorize
    with _reference(story, guide, seed):
        if vectorize:
            with pyro.plate("particles", num_samples, dim=-2):
                logw = _log_weights(story, guide, batch).expand(num_samples, batch.size)
        else:
            logw = torch.stack([_log_weights(story, guide, batch) for _ in range(num_samples)])
    bound = torch.logsumexp(logw, 0) - math.log(num_samples)
    return bound if per_datum else float(bound.sum())


def _draw(values: dict, s: int) -> poutine.Trace:
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, name=name, type="sample", is_observed=False, value=value[s], infer={}, fn=None)
    return trace


def pyro_log_joint(story, batch, values: dict, num_draws: int) -> torch.Tensor:
    r"""``[S, B]``: :math:`\log p(x, z_s)` by Pyro, each draw replayed alone
    (``Trace.compute_log_prob``: scales and masks), latent sites without a value summed out one
    conditioned trace per value."""
    rows = []
    for s in range(num_draws):
        draw = _draw(values, s)
        trace = poutine.trace(poutine.replay(story.model, trace=draw)).get_trace(batch)
        missing = [x for x in _sample_sites(trace) if not x["is_observed"] and x["name"] not in values]
        rows.append(
            _log_joint_summed(story.model, batch, draw, missing) if missing else _per_datum(trace, batch.size)
        )
    return torch.stack(rows)


def exact_log_marginal(story, batch) -> torch.Tensor:
    r""":math:`\log p(x_b)` per datum (``[B]``, float64) with every site's scale and mask as
    Pyro applies them (the limit of :func:`pyro_iw` as :math:`S \to \infty`).

    For a story whose every latent is finite discrete: brute-force enumeration, one trace of
    the model conditioned (``poutine.condition``) on each value of the latents, then a
    log-sum-exp. For the continuous conjugate stories of this module, their closed form
    (``GammaPoisson``, Gaussian marginals and mixtures of them). Others raise ``ValueError``.
    """
    closed_form = _CLOSED_FORMS.get(type(story))
    with _reference(story, None, 0):
        if closed_form is not None:
            return closed_form(story, batch).double()
        prior = poutine.trace(story.model).get_trace(batch)
        latent = [s for s in _sample_sites(prior) if not s["is_observed"]]
        for site in latent:
            if not site["fn"].has_enumerate_support:
                raise ValueError(f"site {site['name']!r} of {type(story).__name__} is not finite discrete")
        return _log_joint_summed(story.model, batch, poutine.Trace(), latent)


def _masked_poisson_marginal(story: MaskedPoisson, batch) -> torch.Tensor:
    rate = story.rate / story.exposure
    log_p = dist.GammaPoisson(story.concentration, rate).log_prob(batch.y)
    return torch.where(batch.seen, log_p, torch.zeros_like(log_p))


def _scaled_marginal(story: ScaledGaussian, batch) -> torch.Tensor:
    r""":math:`\log \int p(z) p(x \mid z)^s dz`: :math:`\mathcal N(x; m, \sigma^2)^s =
    (2\pi\sigma^2)^{(1-s)/2} s^{-1/2}\, \mathcal N(x; m, \sigma^2 / s)`."""
    s, var = story.likelihood_scale, story.noise**2
    weight, bias = story.decoder.weight, story.decoder.bias
    D = weight.shape[0]
    cov = weight @ weight.T + (var / s) * torch.eye(D)
    const = D * (0.5 * (1 - s) * torch.log(2 * math.pi * var) - 0.5 * math.log(s))
    return const + dist.MultivariateNormal(bias, cov).log_prob(batch.x)


def _standard_gaussian_marginal(story: StandardGaussian, batch) -> torch.Tensor:
    return dist.Normal(0.0, math.sqrt(2.0)).log_prob(batch.x).sum(-1)


def _chain_marginal(story: Chain, batch) -> torch.Tensor:
    return dist.Normal(0.0, math.sqrt(5.0 + story.noise**2)).log_prob(batch.x[:, 0])


def _gaussian_mixture_marginal(story: GaussianMixtureLatent, batch) -> torch.Tensor:
    components = dist.Normal(story.means, math.sqrt(1.0 + story.noise**2)).to_event(1)
    mixture = dist.MixtureSameFamily(dist.Categorical(logits=story.mixture_logits), components)
    return mixture.log_prob(batch.x)


_CLOSED_FORMS = {
    MaskedPoisson: _masked_poisson_marginal,
    ScaledGaussian: _scaled_marginal,
    StandardGaussian: _standard_gaussian_marginal,
    Chain: _chain_marginal,
    GaussianMixtureLatent: _gaussian_mixture_marginal,
}
