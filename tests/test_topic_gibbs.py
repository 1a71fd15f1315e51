"""The topic Gibbs kernel on LDA's held-out documents: its theta draws against the exact
posterior mean and its token topics against the exact posterior (both by enumerating every
topic assignment), its chains through ArviZ and the iw-draws estimator, and the registry kind
from Python and from ``fabula diagnose``."""

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from fabula.cli import main
from fabula.data import BagOfWords, Vocab
from fabula.diagnostics import to_arviz
from fabula.diagnostics.arviz import az
from fabula.errors import SettingsError
from fabula.evaluation import evaluate
from fabula.guides import LogisticNormalGuide, NormalGuide
from fabula.inference import MCMC, TopicGibbs
from fabula.inference.kinds import KINDS, Sampling, Setup, build, unfit
from fabula.models import LDA, NVDM

BETA = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
ALPHA = 0.5
TOKENS = [0, 1, 2]  # one document's word ids, ascending (the order the kernel keeps them in)


def tiny_story() -> LDA:
    story = LDA(3, 2, alpha=ALPHA)
    story.set_topics(BETA)
    return story


def documents(*tokens: list[int]) -> BagOfWords:
    counts = torch.stack([torch.bincount(torch.tensor(t), minlength=3).float() for t in tokens])
    return BagOfWords.from_dense(counts, Vocab(["a", "b", "c"]))


def log_joint(z: tuple, tokens: list[int]) -> float:
    r""":math:`\log p(w, z)`, :math:`\theta` integrated out: a Dirichlet-multinomial sequence
    probability of the topics times :math:`\prod_i \beta_{z_i w_i}`."""
    n = torch.bincount(torch.tensor(z), minlength=2).double()
    a = torch.full((2,), ALPHA, dtype=torch.float64)
    prior = (
        torch.lgamma(a.sum())
        - torch.lgamma(n.sum() + a.sum())
        + (torch.lgamma(n + a) - torch.lgamma(a)).sum()
    )
    return float(prior) + sum(math.log(BETA[k, w]) for k, w in zip(z, tokens, strict=True))


def exact_posterior(tokens: list[int]) -> dict[tuple, float]:
    """p(z | w) of every topic assignment z."""
    joint = {z: log_joint(z, tokens) for z in itertools.product(range(2), repeat=len(tokens))}
    total = torch.logsumexp(torch.tensor(list(joint.values()), dtype=torch.float64), 0)
    return {z: math.exp(v - total) for z, v in joint.items()}


def exact_log_evidence(tokens: list[int]) -> float:
    """log p(w), every topic assignment summed."""
    joint = [log_joint(z, tokens) for z in itertools.product(range(2), repeat=len(tokens))]
    return float(torch.logsumexp(torch.tensor(joint, dtype=torch.float64), 0))


def exact_theta_moments(tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`E[\theta \mid w]` and :math:`E[\theta^2 \mid w]` (per topic): the Dirichlet
    :math:`(n(z) + \alpha)`'s moments averaged over :math:`p(z \mid w)`."""
    mean, square = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for z, p in exact_posterior(tokens).items():
        a = torch.bincount(torch.tensor(z), minlength=2).double() + ALPHA
        mean += p * a / a.sum()
        square += p * a * (a + 1) / (a.sum() * (a.sum() + 1))
    return mean, square


def test_theta_draws_have_the_exact_posterior_mean_and_spread():
    """Copies of one document in one batch are independent chains; a copy's draws, averaged,
    are independent across copies, so their spread gives the estimate's standard error."""
    copies = 1000
    batch = documents(*[TOKENS] * copies).batch(torch.arange(copies))
    mcmc = MCMC(tiny_story(), kernel=TopicGibbs(), num_samples=10, warmup=20, num_chains=2, progress=False)
    theta = mcmc.run(batch).samples["theta"].double()  # [chain, draw, copies, K]
    assert theta.shape == (2, 10, copies, 2)
    mean, square = exact_theta_moments(TOKENS)
    # a draw's spread is the posterior's too: the draws are of p(theta | w), not of E[theta | z]
    for statistic, exact in ((theta, mean), (theta.pow(2), square)):
        per_copy = statistic.mean((0, 1))
        se = per_copy.std(0) / math.sqrt(copies)
        assert ((per_copy.mean(0) - exact).abs() <= 4 * se).all(), (per_copy.mean(0), exact, se)


def test_token_topics_are_drawn_from_the_exact_posterior_and_lp_is_their_log_joint():
    torch.manual_seed(0)
    copies = 3000
    story, kernel = tiny_story(), TopicGibbs()
    batch = documents(*[TOKENS] * copies).batch(torch.arange(copies))
    state = kernel.init(story, batch, story.prior_sample(copies), warmup=0)
    for _ in range(20):
        state = kernel.sample(state)
    z = torch.empty_like(state.z)
    z[state.layout.tokens] = state.z  # each document's tokens together, by ascending word id
    states = [tuple(row) for row in z.reshape(copies, len(TOKENS)).tolist()]
    exact = exact_posterior(TOKENS)
    observed = [states.count(key) for key in exact]
    expected = [p * copies for p in exact.values()]
    assert chisquare(observed, expected).pvalue > 1e-3
    lp = kernel.stats(state)["lp"]
    assert lp.shape == (copies,)
    torch.testing.assert_close(
        lp.double(),
        torch.tensor([log_joint(s, TOKENS) for s in states], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


def test_to_arviz_exports_theta_per_document_in_the_batchs_order():
    """A short document of topic 1's word before a long one of topic 0's: the kernel visits
    them longest first and puts each draw back in its place."""
    data = documents([2, 2, 2], [0] * 30)
    batch = data.batch(torch.arange(2))
    mcmc = MCMC(tiny_story(), kernel=TopicGibbs(), num_samples=50, warmup=10, num_chains=2, progress=False)
    idata = to_arviz(mcmc, batch)
    assert idata.posterior["theta"].shape == (2, 50, 2, 2)
    assert idata.posterior.attrs["kernel"] == "TopicGibbs"
    assert idata.sample_stats["lp"].dims == ("chain", "draw", "data")
    mean = idata.posterior["theta"].mean(("chain", "draw")).values
    assert mean[0, 1] > 0.6 and mean[1, 0] > 0.9
    summary = az.summary(idata, var_names=["theta"])
    assert len(summary) == 4 and summary["r_hat"].notna().all()


def test_iw_draws_scores_the_simplex_draws_against_enumeration():
    torch.manual_seed(1)
    data = documents([0, 2, 2, 1])
    mcmc = MCMC(tiny_story(), kernel=TopicGibbs(), num_samples=500, warmup=20, num_chains=2, progress=False)
    report = evaluate(mcmc, data, "iw-draws:4000", progress=False)
    assert float(report.nll[0]) == pytest.approx(-exact_log_evidence([0, 1, 2, 2]), abs=0.02)
    # k-hat is reported; it is not small here: a few proposals in the posterior's exponential tail
    # in the stick-breaking coordinate (alpha < 1), beyond the fitted Student-t's reach, weigh ~10
    # times the median
    assert torch.isfinite(report.diagnostics["khat"]).all()


def test_the_kind_builds_on_lda_and_refuses_other_stories_in_one_line():
    sampling = Sampling(num_samples=3, warmup=1, num_chains=2, progress=False)
    story = tiny_story()
    mcmc = build(
        "topic-gibbs:samples=4", Setup(story, LogisticNormalGuide(3, 2, hidden=[4]), sampling=sampling)
    )
    assert (
        isinstance(mcmc, MCMC)
        and isinstance(mcmc.kernel, TopicGibbs)
        and mcmc.spec == "topic-gibbs:samples=4"
    )
    assert not KINDS["topic-gibbs"].trains
    chains = mcmc.run(documents([0, 1], [2]).batch(torch.arange(2)))
    assert chains.samples["theta"].shape == (2, 4, 2, 2)
    assert "DirichletTopics" in unfit(KINDS["topic-gibbs"], NVDM)
    nvdm = build("topic-gibbs", Setup(NVDM(3, 2), NormalGuide(3, 2), sampling=sampling))
    with pytest.raises(SettingsError, match="LDA's form") as refused:
        nvdm.run(documents([0, 1]).batch(torch.arange(1)))
    assert "\n" not in str(refused.value)


def test_diagnose_samples_a_run_trained_by_collapsed_gibbs(tmp_path, capsys):
    """The README's path: a run whose guide has no encoder of its own."""
    run, out = str(tmp_path / "run"), tmp_path / "diag"
    tiny = ["--num-topics", "3", "--epochs", "1", "--quiet", "--no-reference"]
    assert main(["train", "lda", "--inference", "collapsed-gibbs", "--out", run, *tiny]) == 0
    capsys.readouterr()
    argv = [
        "diagnose",
        run,
        "--inference",
        "topic-gibbs",
        "--items",
        "0:2",
        "--samples",
        "20",
        "--warmup",
        "5",
    ]
    assert main([*argv, "--chains", "2", "--out", str(out)]) == 0
    assert "r_hat" in capsys.readouterr().out
    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert idata.posterior["theta"].shape == (2, 20, 2, 3) and "lp" in idata.sample_stats
