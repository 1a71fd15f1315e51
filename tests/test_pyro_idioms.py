"""Pyro's own tools on every shipped story and on the README's: posterior and prior predictive
draws through ``poutine.uncondition``, ``render_model``, and the README story's perplexity."""

import re
import shutil
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive

from fabula.data.text import EOS, PAD
from fabula.evaluation import evaluate
from fabula.guides import MixtureGuide
from fabula.inference import Amortized
from fabula.models import GMVAE
from fabula.models.capabilities import GeneratesSentences
from helpers import linear_gaussian_setup, nvdm_setup, sentence_setup

README = Path(__file__).resolve().parents[1] / "README.md"
STORIES = ("nvdm", "readme", "rnnlm", "lstm-vae", "gmvae", "linear-gaussian")
S = 3  # replicas per datum


def readme_story_class():
    """``MyTopicStory``, run as the README writes it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "class MyTopicStory" in b]
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace["MyTopicStory"]


def setup(name, device="cpu"):
    """A tiny story, a guide for it, a batch of 4 data and the batch's observation, on ``device``."""
    story, guide, batch, observed = _setup(name)
    return story.to(device), guide.to(device), batch.to(device), observed.to(device)


def _setup(name):
    if name in ("nvdm", "readme"):
        story, guide, corpus = nvdm_setup()
        if name == "readme":
            story = readme_story_class()(story.vocab_size, story.latent_dim)
        batch = corpus["train"].batch(torch.arange(4))
        return story, guide, batch, batch.counts
    if name == "linear-gaussian":
        story, guide, data = linear_gaussian_setup(num_data=4)
        batch = data.batch(torch.arange(4))
        return story, guide, batch, batch.x
    story, guide, corpus = sentence_setup(latent=name != "rnnlm")
    if name == "gmvae":
        V = story.vocab_size
        story, guide = (
            GMVAE(V, 3, 2, num_pairs=2, embed_dim=8, hidden_dim=12),
            MixtureGuide(V, 3, 2, 2, 8, 12),
        )
    batch = corpus["train"].batch(torch.arange(4))
    return story, guide, batch, batch.targets


def assert_valid(name, story, batch, x):
    """Draws ``[S, ...]`` are data the story could have observed for this batch."""
    if name in ("nvdm", "readme"):  # word counts of documents as long as the batch's
        assert (x >= 0).all() and (x == x.round()).all()
        assert torch.equal(x.sum(-1), batch.lengths.expand(x.shape[:-1]))
    elif name == "linear-gaussian":
        assert torch.isfinite(x).all()
    else:  # word ids, <pad> after the first <eos>
        assert x.dtype == torch.long and (x >= 0).all() and (x < story.vocab_size).all()
        eos = x == EOS
        after_eos = (eos.cumsum(-1) - eos.long()) > 0
        assert (x[after_eos] == PAD).all()


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("name", STORIES)
def test_predictive_on_the_unconditioned_story_draws_fresh_data(name, parallel, device):
    story, guide, batch, observed = setup(name, device)
    draws = Predictive(poutine.uncondition(story.model), guide=guide, num_samples=S, parallel=parallel)(batch)
    x = draws["x"]
    assert x.shape == (S, *observed.shape)
    assert_valid(name, story, batch, x)
    for replica in x:
        assert not torch.equal(replica, observed)
    for site in story.latent_sites:  # the latents come from q, one draw per replica
        assert draws[site].shape[:2] == (S, batch.size)
    # prior predictive: the same without the guide
    prior = Predictive(poutine.uncondition(story.model), num_samples=S, parallel=parallel)(batch)["x"]
    assert prior.shape == (S, *observed.shape)
    assert_valid(name, story, batch, prior)


@pytest.mark.parametrize("name", STORIES)
def test_predictive_on_the_story_keeps_its_observation_as_obs_means(name, device):
    story, guide, batch, observed = setup(name, device)
    x = Predictive(story.model, guide=guide, num_samples=2)(batch)["x"]
    assert torch.equal(x, observed.expand(2, *observed.shape))


@pytest.mark.parametrize("name", STORIES)
def test_an_unconditioned_trace_scores_its_own_draw(name, device):
    story, _, batch, observed = setup(name, device)
    trace = poutine.trace(poutine.uncondition(story.model)).get_trace(batch)
    trace.compute_log_prob()
    site = trace.nodes["x"]
    assert site["infer"]["was_observed"] and site["value"].shape == observed.shape
    assert site["log_prob"].shape == (batch.size,) and torch.isfinite(site["log_prob"]).all()


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's `dot` program is not installed")
@pytest.mark.parametrize("name", STORIES)
def test_render_model_draws_every_story(name, tmp_path):
    story, _, batch, _ = setup(name)
    graph = pyro.render_model(story.model, model_args=(batch,), filename=tmp_path / f"{name}.svg")
    assert (tmp_path / f"{name}.svg").stat().st_size > 0
    parents = story.code_sites if isinstance(story, GeneratesSentences) else story.latent_sites
    for site in parents:  # every latent that the observation reads is drawn as its parent
        assert f"{site} -> x" in graph.source


def test_the_readme_story_reports_the_perplexity_of_nvdm_with_its_weights():
    nvdm, guide, corpus = nvdm_setup()
    pyro.set_rng_seed(0)
    Amortized(nvdm, guide).fit(corpus["train"], epochs=2, batch_size=16, progress=False)
    mine = readme_story_class()(nvdm.vocab_size, nvdm.latent_dim)
    mine.decoder.load_state_dict(nvdm.decoder.state_dict())
    reports = []
    for story in (nvdm, mine):
        torch.manual_seed(1)
        reports.append(evaluate(Amortized(story, guide), corpus["test"], "iw:10").summary())
    for key in ("perplexity", "corpus_perplexity", "nll"):
        assert reports[1][key] == pytest.approx(reports[0][key], rel=1e-6)
    # an honest number: with a uniform decoder and q = p(z), every token costs log V exactly
    with torch.no_grad():
        mine.decoder.weight.zero_()
        mine.decoder.bias.zero_()
        guide.net.mlp[-1].weight.zero_()
        guide.net.mlp[-1].bias.zero_()
    uniform = evaluate(Amortized(mine, guide), corpus["test"], "elbo:2").summary()
    assert uniform["kl"] == pytest.approx(0.0, abs=1e-6)
    assert uniform["perplexity"] == pytest.approx(nvdm.vocab_size, rel=1e-5)
    assert uniform["corpus_perplexity"] == pytest.approx(nvdm.vocab_size, rel=1e-5)
