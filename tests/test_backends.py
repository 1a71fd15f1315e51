import itertools

import jax
import numpy as np
import pytest
import torch
from pyro import poutine

from fabula.backends.numpyro import nuts, twin
from fabula.inference import MCMC
from fabula.inference.kernels import NumPyroNUTS, PyroNUTS
from fabula.models import GMVAE, LSTMVAE
from fabula.traces import sample_sites
from helpers import linear_gaussian_setup, nvdm_setup, sentence_setup


def pyro_log_joint(story, batch, z: dict) -> torch.Tensor:
    """log p(x, z) per datum from the torch story's trace, discrete sites summed by brute force."""
    discrete = [s for s in story.latent_sites if s not in z]
    terms = []
    for combo in itertools.product(range(getattr(story, "num_components", 1)), repeat=len(discrete)):
        values = {**z, **{s: torch.full((batch.size,), c) for s, c in zip(discrete, combo, strict=True)}}
        trace = poutine.trace(poutine.condition(story.model, data=values)).get_trace(batch)
        terms.append(sum(site["fn"].log_prob(site["value"]) for site in sample_sites(trace)))
    return torch.logsumexp(torch.stack(terms), 0)


def stories():
    torch.manual_seed(0)
    nvdm, _, bow = nvdm_setup()
    lstm, _, text = sentence_setup()
    initial_only = LSTMVAE(30, 4, 8, 12, z_every_step=False)
    gmvae = GMVAE(30, 3, 2, num_pairs=2, embed_dim=8, hidden_dim=12)
    lg, _, vectors = linear_gaussian_setup(num_data=5)
    sentences = text["train"].batch(torch.arange(6))
    return {
        "nvdm": (nvdm, bow["train"].batch(torch.arange(6))),
        "lstm-vae": (lstm, sentences),
        "lstm-vae-initial-state": (initial_only, sentences),
        "gmvae": (gmvae, sentences),
        "linear-gaussian": (lg, vectors.batch(torch.arange(5))),
    }


@pytest.mark.parametrize("name", list(stories()))
def test_log_joint_of_the_jax_twin_equals_the_story_in_float64(name):
    story, batch = stories()[name]
    story = story.double().eval()
    batch = type(batch)(**{k: v.double() if v.is_floating_point() else v for k, v in vars(batch).items()})
    with jax.enable_x64(True):
        jt = twin(story)
        z = {s: torch.randn(batch.size, story.latent_dim, dtype=torch.float64) * 1.5 for s in jt.sites}
        expected = pyro_log_joint(story, batch, z).detach().numpy()
        got = jax.vmap(jt.log_joint, (None, 0, 0))(
            jt.params, {s: v.numpy() for s, v in z.items()}, jt.data(batch)
        )
        assert got.dtype == np.float64
        np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-5)


def test_a_story_without_a_twin_is_named():
    story, _, _ = sentence_setup(latent=False)
    with pytest.raises(TypeError, match="no NumPyro twin of RNNLM"):
        twin(story)


def test_the_backend_picks_the_nuts_kernel_and_an_unknown_one_is_refused():
    story, guide, _ = linear_gaussian_setup(num_data=2)
    kernel = MCMC(story, guide, backend="numpyro", target_accept=0.9, max_tree_depth=6).kernel
    assert isinstance(kernel, NumPyroNUTS) and (kernel.target_accept, kernel.max_tree_depth) == (0.9, 6)
    assert isinstance(MCMC(story, guide).kernel, PyroNUTS)
    with pytest.raises(ValueError, match="unknown MCMC backend 'stan'"):
        MCMC(story, guide, backend="stan")


def test_numpyro_nuts_runs_chains_per_datum_and_reports_their_statistics():
    story, _, data = linear_gaussian_setup(num_data=4)
    batch = data.batch(torch.arange(4))
    result = nuts(twin(story), batch, {"z": np.zeros((4, story.latent_dim))}, 60, 100, 3, progress=False)
    assert result.samples["z"].shape == (3, 60, 4, story.latent_dim)
    for name in ("energy", "diverging", "step_size", "n_steps", "tree_depth", "accept_prob"):
        assert result.stats[name].shape == (3, 60, 4)
    assert (result.stats["n_steps"] >= 1).all()
    assert (2 ** result.stats["tree_depth"] > result.stats["n_steps"]).all()
    # warmup adapted a step size per chain and datum, fixed while sampling
    assert (result.stats["step_size"].max(1) == result.stats["step_size"].min(1)).all()
    assert len(np.unique(result.stats["step_size"][:, 0])) == 12
    assert result.compile_seconds > 0 and result.sample_seconds > 0
