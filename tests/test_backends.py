import numpy as np
import pytest
import torch

from fabula.backends.numpyro import nuts, twin
from fabula.backends.parity import check_twin
from fabula.inference import MCMC
from fabula.inference.kernels import NumPyroNUTS, PyroNUTS
from fabula.models import GMVAE, LSTMVAE
from helpers import linear_gaussian_setup, nvdm_setup, sentence_setup


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
def test_log_joint_and_gradient_of_the_jax_twin_equal_the_storys_in_float64(name):
    story, batch = stories()[name]
    errors = check_twin(story, batch, atol=1e-5)
    assert set(errors) == {"log_joint", *(f"grad[{s}]" for s in twin(story).sites)}
    assert next(story.parameters()).dtype == torch.float32  # checked on a float64 copy


def test_a_story_without_a_twin_is_named():
    story, _, _ = sentence_setup(latent=False)
    with pytest.raises(TypeError, match="no hand-written NumPyro twin of RNNLM is registered"):
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
