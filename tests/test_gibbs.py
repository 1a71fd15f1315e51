"""The binary Gibbs kernel on the sigmoid belief net: its draws against the enumerated
posterior, its chains through ArviZ, the registry kind, and MCMC's reuse of a run."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2
from test_sbn import V, teacher

from fabula.cli import main
from fabula.data import BagOfWords
from fabula.data.vocab import Vocab
from fabula.diagnostics import to_arviz
from fabula.diagnostics.arviz import az
from fabula.errors import UsageError
from fabula.guides import BernoulliGuide, NormalGuide
from fabula.inference import MCMC, DiscreteGibbs
from fabula.inference.kinds import Sampling, Setup, build
from fabula.models import NVDM

F_ = 4


def tiny_sbn(seed=0, spread=0.8):
    return teacher(latent_dim=F_, spread=spread, seed=seed)


def documents(counts: torch.Tensor) -> BagOfWords:
    return BagOfWords.from_dense(counts, Vocab([f"w{i:02d}" for i in range(V)]))


def codes() -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=F_)))


@torch.no_grad()
def exact_posterior(story, counts: torch.Tensor) -> torch.Tensor:
    """``[B, 2^F]``: p(h | x) over all codes, in :func:`codes`' order."""
    h, a = codes(), story.prior_logits
    log_prior = (h * F.logsigmoid(a) + (1 - h) * F.logsigmoid(-a)).sum(-1)
    joint = log_prior + counts @ torch.log_softmax(story.decoder(h), -1).T
    return (joint - joint.logsumexp(-1, keepdim=True)).exp()


def test_gibbs_draws_follow_the_enumerated_posterior():
    story = tiny_sbn()
    torch.manual_seed(1)
    docs = story.generate(torch.tensor([4.0, 8.0, 15.0]))
    copies = 1500  # each document many times in one batch: independent chains, one draw each
    data = documents(docs.repeat_interleave(copies, 0))
    mcmc = MCMC(story, kernel=DiscreteGibbs(), num_samples=1, warmup=30, progress=False, seed=2)
    h = mcmc.posterior(data.batch(torch.arange(len(data))))["h"][0]  # [B, F]
    index = (h * 2 ** torch.arange(F_ - 1, -1, -1)).sum(-1).long()  # row of codes()
    exact = exact_posterior(story, docs)
    for d in range(len(docs)):
        observed = torch.bincount(index[d * copies : (d + 1) * copies], minlength=2**F_).double()
        expected = copies * exact[d].double()
        big = expected >= 5  # states expected fewer than 5 times are pooled into one cell
        cells_o = torch.cat([observed[big], observed[~big].sum(0, keepdim=True)])
        cells_e = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)])
        keep = cells_e > 0
        statistic = float(((cells_o - cells_e)[keep] ** 2 / cells_e[keep]).sum())
        df = int(keep.sum()) - 1
        assert df >= 3  # the test has cells to compare
        assert statistic < chi2.ppf(0.999, df), (d, statistic, df)  # false alarm 1 in 1000


def test_gibbs_chains_convert_to_arviz_with_r_hat_and_ess_of_the_units_means():
    story = tiny_sbn()
    torch.manual_seed(0)
    data = documents(story.generate(torch.tensor([4.0, 8.0])))
    batch = data.batch(torch.arange(2))
    guide = BernoulliGuide(V, F_)
    mcmc = MCMC(
        story, guide, kernel=DiscreteGibbs(), num_samples=200, warmup=20, num_chains=2, progress=False
    )
    idata = to_arviz(mcmc, batch)
    assert idata.posterior["h"].shape == (2, 200, 2, F_)
    assert set(idata.posterior["h"].values.ravel().tolist()) <= {0.0, 1.0}
    assert idata.sample_stats["flips"].dims == ("chain", "draw", "data")
    summary = az.summary(idata, var_names=["h"])
    assert len(summary) == 2 * F_
    assert (summary["r_hat"] < 1.1).all() and (summary["ess_bulk"] > 50).all()
    assert idata.log_likelihood["x"].shape == (2, 200, 2)


def test_the_gibbs_kind_and_what_it_refuses():
    story = tiny_sbn()
    setup = Setup(story, BernoulliGuide(V, F_), sampling=Sampling(num_samples=3, warmup=1, backend="pyro"))
    mcmc = build("gibbs", setup)
    assert isinstance(mcmc, MCMC) and isinstance(mcmc.kernel, DiscreteGibbs) and mcmc.spec == "gibbs"
    data = documents(torch.ones(2, V))
    assert mcmc.posterior(data.batch(torch.arange(2)))["h"].shape == (3, 2, F_)
    nvdm = NVDM(V, 2)
    gibbs = MCMC(
        nvdm, NormalGuide(V, 2, hidden=[]), kernel=DiscreteGibbs(), num_samples=2, warmup=0, progress=False
    )
    with pytest.raises(UsageError, match="finite discrete latents; site 'z' of NVDM"):
        gibbs.run(data.batch(torch.arange(2)))


def test_mcmc_reuses_a_run_on_equal_data_and_reruns_when_the_story_changes():
    story = tiny_sbn()
    data = documents(torch.ones(3, V))
    mcmc = MCMC(story, kernel=DiscreteGibbs(), num_samples=4, warmup=1, progress=False)
    first = mcmc.run(data.batch(torch.arange(3)))
    assert mcmc.chains_for(data.batch(torch.arange(3))) is first  # an equal batch, rebuilt
    assert mcmc.chains_for(data.batch(torch.arange(2))) is not first
    second = mcmc.run(data.batch(torch.arange(3)))
    saved = story.prior_logits.detach().clone()
    with torch.no_grad():
        story.prior_logits.add_(1.0)
    assert mcmc.chains_for(data.batch(torch.arange(3))) is not second
    with torch.no_grad():
        story.prior_logits.copy_(saved)
    again = mcmc.chains_for(data.batch(torch.arange(3)))  # parameters written since: a new run
    assert again is not second and torch.equal(again.samples["h"], first.samples["h"])  # seeded


# a unit that keeps one value in every chain (a near-certain posterior) has no r-hat: ArviZ divides 0 by 0
@pytest.mark.filterwarnings("ignore:invalid value encountered in scalar divide:RuntimeWarning")
def test_diagnose_samples_a_trained_sbn_with_gibbs(tmp_path, capsys):
    run, out = str(tmp_path / "run"), tmp_path / "diag"
    tiny = ["--epochs", "1", "--latent-dim", "3", "--hidden", "8", "--quiet", "--no-reference"]
    assert main(["train", "sbn", "--inference", "nvil", "--out", run, *tiny]) == 0
    capsys.readouterr()
    argv = ["diagnose", run, "--inference", "gibbs", "--items", "0:2", "--samples", "20", "--warmup", "5"]
    assert main([*argv, "--chains", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "h[" in printed  # az.summary of the units
    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert idata.posterior["h"].shape == (2, 20, 2, 3) and "flips" in idata.sample_stats
