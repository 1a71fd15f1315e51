"""The Replicated Softmax against brute force on tiny cases: its conditionals and free energy,
AIS's log Z_D (along the length and along the temperature) against the enumerated one, the CD gradient against the exact one, training,
exact resume of persistent chains, the registry kinds through the command, and the estimators
that refuse it."""

import itertools
import json
import math

import pytest
import torch

from fabula.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fabula.cli import main
from fabula.data import BagOfWords, Vocab
from fabula.distributions.by_length import BagOfWordsByLength
from fabula.errors import SettingsError, UsageError
from fabula.evaluation import AIS, default_estimator, evaluate, parse_estimator
from fabula.evaluation.ais import (
    LengthAnnealing,
    best_hidden_state,
    length_grid,
    length_log_partition,
    local_maxima,
    log_partition,
    temperatures,
    word_states,
)
from fabula.evaluation.estimators import TemperedAIS, spec_of
from fabula.guides import EmptyGuide, NormalGuide
from fabula.inference import Amortized, ContrastiveDivergence, ContrastiveObjective
from fabula.inference.contrastive import reconstruction_error
from fabula.inference.kinds import Setup, Training, build
from fabula.models import NVDM, ReplicatedSoftmax
from fabula.models.capabilities import Undirected


def tiny_rsm(vocab=6, hidden=4, scale=1.0, seed=0) -> ReplicatedSoftmax:
    torch.manual_seed(seed)
    story = ReplicatedSoftmax(vocab, hidden)
    with torch.no_grad():
        story.weight.normal_(0, scale)
        story.visible_bias.normal_(0, 1.0)
        story.hidden_bias.normal_(0, 0.5)
        story.base_logits.normal_(0, 0.3)
    return story


def hidden_states(hidden: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=hidden)), dtype=torch.float64)


@torch.no_grad()
def exact_log_partition(story, length: int, beta: float = 1.0) -> float:
    r""":math:`\log Z_D = \log \sum_h e^{D a\cdot h} (\sum_k e^{b_k + (W^\top h)_k})^D` over all
    :math:`2^F` hidden states (sequences of length D), for the story tempered at ``beta``."""
    W, a = beta * story.weight.double(), beta * story.hidden_bias.double()
    b = (1 - beta) * story.base_logits.double() + beta * story.visible_bias.double()
    H = hidden_states(story.hidden)
    return float(torch.logsumexp(length * (H @ a) + length * torch.logsumexp(b + H @ W, -1), 0))


@torch.no_grad()
def exact_log_prob(story, counts: torch.Tensor) -> torch.Tensor:
    """log p of each document's token sequence, with the enumerated log Z_D."""
    log_z = torch.tensor([exact_log_partition(story, int(d)) for d in counts.sum(-1)], dtype=torch.float64)
    return -story.free_energy(counts.double(), torch.ones((), dtype=torch.float64)) - log_z


def corpus(counts: torch.Tensor) -> BagOfWords:
    return BagOfWords.from_dense(counts, Vocab([f"w{i}" for i in range(counts.shape[1])]))


def two_topic_corpus(num: int = 240, vocab: int = 6, seed: int = 0) -> BagOfWords:
    """Documents of 3-12 tokens, each from one of two word distributions."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.tensor([[0.4, 0.4, 0.1, 0.05, 0.03, 0.02], [0.02, 0.03, 0.05, 0.1, 0.4, 0.4]])[:, :vocab]
    which = torch.randint(0, 2, (num,), generator=g)
    lengths = torch.randint(3, 13, (num,), generator=g)
    counts = torch.zeros(num, vocab)
    for n in range(num):
        words = torch.multinomial(topics[which[n]], int(lengths[n]), replacement=True, generator=g)
        counts[n] = torch.bincount(words, minlength=vocab).float()
    return corpus(counts)


def test_conditionals_and_free_energy_match_brute_force():
    story = tiny_rsm(vocab=4, hidden=3)
    v = torch.tensor([2.0, 0.0, 1.0, 0.0])
    H = hidden_states(3).float()
    with torch.no_grad():
        # p(h | v) over the 8 hidden states, from the energy
        joint = -story.energy(v.expand(len(H), 4), H)
        assert torch.allclose(
            story.hidden_given_visible(v).log_prob(H), joint - joint.logsumexp(0), atol=1e-5
        )
        # F(v) = -log sum_h exp(-E(v, h))
        assert story.free_energy(v) == pytest.approx(-float(joint.logsumexp(0)), abs=1e-5)
        # p(w_1:3 | h) over the 4^3 sequences, from the energy
        h = H[5]
        seqs = torch.tensor(list(itertools.product(range(4), repeat=3)))
        counts = torch.nn.functional.one_hot(seqs, 4).sum(1).float()
        scores = -story.energy(counts, h.expand(len(counts), 3))
        want = scores - scores.logsumexp(0)
        got = story.visible_given_hidden(h, torch.tensor(3.0)).log_prob(counts)
        assert torch.allclose(got, want, atol=1e-5)


def test_the_tempered_family_and_its_base():
    story = tiny_rsm(vocab=5, hidden=4)
    H = hidden_states(4)
    v = torch.tensor([1.0, 3.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    beta = 0.3
    W, a = beta * story.weight.double(), beta * story.hidden_bias.double()
    b = (1 - beta) * story.base_logits.double() + beta * story.visible_bias.double()
    energies = -(H @ (W @ v + 6 * a)) - b @ v
    with torch.no_grad():
        assert story.free_energy(v, torch.tensor(beta, dtype=torch.float64)) == pytest.approx(
            -float((-energies).logsumexp(0)), abs=1e-5
        )
        both = story.free_energy(v.expand(2, 5), torch.tensor([0.0, beta], dtype=torch.float64))
        assert both.shape == (2, 2) and both[1, 0] == pytest.approx(
            float(story.free_energy(v, beta)), abs=1e-4
        )
        assert float(story.base_log_partition(torch.tensor([7.0]))) == pytest.approx(
            exact_log_partition(story, 7, beta=0.0), abs=1e-9
        )
        # the hidden units' marginal, the words summed out: Z_D = sum_h exp(D g(h))
        assert float(story.hidden_log_marginal(H, 9.0).logsumexp(0)) == pytest.approx(
            exact_log_partition(story, 9), abs=1e-9
        )


@pytest.mark.parametrize("hidden", [8, 12])
@pytest.mark.parametrize("exact_modes", [False, True], ids=["annealed", "modes summed"])
def test_length_ais_matches_the_enumerated_log_partition_and_tightens_with_steps(hidden, exact_modes):
    story = tiny_rsm(vocab=7, hidden=hidden, scale=1.0, seed=hidden)
    lengths = [1, 4, 17, 60, 250]
    exact = torch.tensor([exact_log_partition(story, d) for d in lengths], dtype=torch.float64)
    modes = local_maxima(story, word_states(story))[0] if exact_modes else None
    errors, ses = [], []
    for steps in (2, 60):
        found, se, ess = length_log_partition(story, lengths, runs=200, steps=steps, seed=3, modes=modes)
        assert ((ess > 1) & (ess <= 200)).all()
        errors.append((found - exact).abs().max())
        ses.append(se)
    # the fine annealing within three standard errors (+ rounding: where the summed modes carry
    # Z_D, the standard error is ~0), and closer than the coarse one
    assert ((found - exact).abs() <= 3 * se + 1e-9).all(), (found - exact, se)
    assert errors[1] < errors[0] and (ses[1] <= ses[0]).all() and (ses[1] < ses[0]).any()


def test_length_ais_answers_every_length_from_one_annealing_that_continues():
    story = tiny_rsm(vocab=6, hidden=6, scale=0.7)
    grid, sweeps = length_grid(10, 300)
    assert grid[0] == 0 and grid[-1] == 300 and bool((grid.diff() > 0).all())
    assert set(range(301)) <= set(grid.tolist()) and bool((grid[1:] > 0.09).all())
    assert bool(sweeps[grid <= 10].all())  # below S words every point sweeps
    ratios = grid[sweeps & (grid > 10)].diff() / grid[sweeps & (grid > 10)][:-1]  # above, S per e-fold
    assert torch.allclose(ratios, torch.full_like(ratios, 0.1), atol=1e-9)
    longer = length_grid(10, 500)
    assert torch.equal(longer[0][: len(grid)], grid) and torch.equal(longer[1][: len(grid)], sweeps)
    state = torch.get_rng_state()
    at_once = LengthAnnealing(story, runs=20, steps=10, seed=5).log_partition([30, 3, 12])
    assert torch.equal(torch.get_rng_state(), state)
    annealing = LengthAnnealing(story, runs=20, steps=10, seed=5)
    first = annealing.log_partition([12, 3])
    later = annealing.log_partition([30, 12])
    assert torch.equal(at_once.log_z, torch.stack([later.log_z[0], first.log_z[1], first.log_z[0]]))
    assert torch.equal(first.log_z[0], later.log_z[1])
    zero = annealing.log_partition([0])
    assert float(zero.log_z) == pytest.approx(6 * math.log(2)) and float(zero.se) == 0
    with pytest.raises(SettingsError, match="steps"):
        length_grid(0, 5)
    with pytest.raises(SettingsError, match="runs"):
        LengthAnnealing(story, runs=1)


def test_tempered_ais_matches_the_enumerated_log_partition_and_tightens_with_temperatures():
    story = tiny_rsm(vocab=6, hidden=8, scale=0.5)
    lengths = [1, 5, 20]
    exact = torch.tensor([exact_log_partition(story, d) for d in lengths], dtype=torch.float64)
    coarse, coarse_se, _ = log_partition(story, lengths, runs=100, betas=temperatures(30), seed=1)
    fine, fine_se, ess = log_partition(story, lengths, runs=100, betas=temperatures(1000), seed=1)
    assert ((fine - exact).abs() <= 3 * fine_se).all(), (fine - exact, fine_se)
    assert (fine_se < coarse_se).all()
    assert (fine - exact).abs().max() < (coarse - exact).abs().max()
    assert ((ess > 10) & (ess <= 100)).all()


def test_the_mode_bound_catches_an_annealing_that_missed_mass():
    story = tiny_rsm(vocab=6, hidden=8, scale=2.0)
    H = hidden_states(8)
    g = story.hidden_log_marginal(H, 1.0).detach()
    assert best_hidden_state(story, H[:3]) <= float(g.max()) == best_hidden_state(story, H)
    assert 60 * float(g.max()) <= exact_log_partition(story, 60)  # log Z_D >= D max_h g(h)
    data = corpus(torch.tensor([[10.0, 10, 10, 10, 10, 10]]))
    inference = ContrastiveDivergence(story)
    coarse = evaluate(inference, data, TemperedAIS(runs=2, steps=3)).diagnostics["ais_mode_gap"]
    fine = evaluate(inference, data, TemperedAIS(runs=50, steps=2000)).diagnostics["ais_mode_gap"]
    along = evaluate(inference, data, AIS(runs=50, steps=20)).diagnostics["ais_mode_gap"]
    assert float(coarse) > 1.0 and float(fine) == 0.0 and float(along) == 0.0


def test_summing_the_narrow_modes_exactly_rescues_a_short_annealing():
    story = tiny_rsm(vocab=6, hidden=10, scale=2.0, seed=4)
    modes = local_maxima(story, word_states(story))[0]
    lengths = [5, 40, 200]
    exact = torch.tensor([exact_log_partition(story, d) for d in lengths], dtype=torch.float64)
    alone = length_log_partition(story, lengths, runs=4, steps=1, seed=0)
    summed = length_log_partition(story, lengths, runs=4, steps=1, seed=0, modes=modes)
    annealing = LengthAnnealing(story, runs=4, steps=1, modes=modes)
    assert 0 < len(annealing.known) < 2**10 and not annealing._is_known(annealing._codes(annealing.h)).any()
    assert (summed.log_z - exact).abs().max() < (alone.log_z - exact).abs().max()


def test_temperatures_follow_salakhutdinov_and_murray():
    betas = temperatures(14_500)
    assert len(betas) == 14_501 and betas[0] == 0 and betas[-1] == 1
    assert int((betas < 0.5).sum()) == 500 and int(((betas >= 0.5) & (betas < 0.9)).sum()) == 4_000
    with pytest.raises(SettingsError, match="at least 3"):
        temperatures(2)


@pytest.mark.parametrize("estimator", [AIS(runs=50, steps=30), TemperedAIS(runs=50, steps=300)], ids=str)
def test_evaluate_scores_each_datum_with_its_lengths_log_partition(estimator):
    story = tiny_rsm(vocab=6, hidden=6, scale=0.5)
    data = corpus(
        torch.tensor([[1.0, 0, 2, 0, 0, 1], [0, 3, 0, 1, 0, 0], [2, 0, 0, 0, 2, 0], [0, 0, 0, 0, 1, 0]])
    )
    inference = ContrastiveDivergence(story)
    report = evaluate(inference, data, estimator, batch_size=2)
    exact = exact_log_prob(story, data.batch(torch.arange(4)).counts)
    se = report.diagnostics["ais_se"]
    assert torch.allclose(-report.nll, exact, atol=float(3 * se.max()) + 1e-6)
    summary = report.summary()
    assert summary["estimator"] == estimator.name and math.isfinite(summary["perplexity"])
    assert {"ais_se_mean", "ais_se_max", "ais_ess_mean"} <= set(summary) and summary["ais_ess_max"] <= 50
    assert summary["ais_mode_gap_max"] == 0.0  # an accurate annealing is above the bound
    if isinstance(estimator, TemperedAIS):  # two documents share the length 4: two annealings
        assert sorted(estimator._cache["values"]) == [1, 4]
    assert evaluate(inference, data, estimator, batch_size=4).nll.tolist() == report.nll.tolist()
    with torch.no_grad():
        story.weight.add_(0.1)
    assert evaluate(inference, data, estimator).nll.tolist() != report.nll.tolist()


def test_the_estimators_that_cannot_score_an_rsm_name_ais():
    story = tiny_rsm()
    data = corpus(torch.tensor([[1.0, 0, 2, 0, 0, 1]]))
    inference = ContrastiveDivergence(story)
    assert isinstance(story, Undirected) and isinstance(default_estimator(story), AIS)
    assert isinstance(default_estimator(story), AIS) and parse_estimator("ais-beta").steps == 14_500
    for spec in ("elbo", "iw:5", "exact", "iw-draws:5"):
        with pytest.raises(UsageError, match="ais"):
            evaluate(inference, data, spec)
    nvdm = Amortized(NVDM(6, 2), NormalGuide(6, 2, hidden=[4]))
    for spec in ("ais:2:5", "ais-beta:2:5"):
        with pytest.raises(UsageError, match="directed"):
            evaluate(nvdm, data, spec)
    assert spec_of(parse_estimator("ais:7:30")) == "ais:7:30"
    assert spec_of(parse_estimator("ais-beta:7:30")) == "ais-beta:7:30"
    assert (parse_estimator("ais").runs, parse_estimator("ais:9").steps) == (100, 100)
    for bad in ("ais:1", "ais:x", "ais:5:0", "ais:5:10:3", "ais-beta:5:2"):
        with pytest.raises(SettingsError):
            parse_estimator(bad)
    with pytest.raises(UsageError, match="undirected"):
        story.model(data.batch(torch.arange(1)))


def test_the_registry_builds_cd_and_refuses_what_does_not_apply_to_it():
    story = tiny_rsm()
    made = build("pcd:2", Setup(story, EmptyGuide(), training=Training(clip_norm=5.0)))
    assert isinstance(made, ContrastiveDivergence) and (made.k, made.persistent) == (2, True)
    with pytest.raises(SettingsError, match="fits the story itself"):
        build("cd:1", Setup(story, EmptyGuide(), training=Training(learn_story=False)))
    with pytest.raises(SettingsError, match="do not apply to contrastive divergence"):
        build("cd:1", Setup(story, EmptyGuide(), training=Training(word_dropout=0.3)))


def exact_gradient(story, counts):
    params = [story.weight, story.visible_bias, story.hidden_bias]
    log_z = {}
    H = hidden_states(story.hidden).float()
    for d in counts.sum(-1).unique().tolist():
        log_z[d] = torch.logsumexp(
            d * (H @ story.hidden_bias) + d * torch.logsumexp(story.visible_bias + H @ story.weight, -1), 0
        )
    ll = (-story.free_energy(counts) - torch.stack([log_z[d] for d in counts.sum(-1).tolist()])).mean()
    return torch.autograd.grad(ll, params)


def cd_gradient(inference, counts):
    story = inference.story
    gap = (story.free_energy(counts) - story.free_energy(inference.negative(counts))).mean()
    return torch.autograd.grad(-gap, [story.weight, story.visible_bias, story.hidden_bias])


def test_the_cd_gradient_against_the_exact_one():
    story = tiny_rsm(vocab=5, hidden=4, scale=0.5)
    with torch.no_grad():
        story.visible_bias.mul_(0.5)
    data = torch.tensor([[2.0, 0, 1, 0, 0], [0, 3, 0, 0, 0], [1, 1, 0, 1, 0]]).repeat(3000, 1)
    exact = exact_gradient(story, data)

    def error(grads):
        return max(float((g - e).abs().max()) for g, e in zip(grads, exact, strict=True))

    torch.manual_seed(0)
    cd1 = error(cd_gradient(ContrastiveDivergence(story, 1), data))
    cd20 = error(cd_gradient(ContrastiveDivergence(story, 20), data))
    pcd = ContrastiveDivergence(story, 1, persistent=True)
    for _ in range(20):  # the persistent chains burn in (no update: the story is fixed)
        pcd.negative(data)
    persistent = error(cd_gradient(pcd, data))
    assert cd20 < 0.05 and persistent < 0.05  # Monte Carlo error of 9000 chains: ~0.02
    assert cd1 > 0.1  # CD-1's bias (Carreira-Perpinan & Hinton 2005)


# persistent chains keep up with the model only at a smaller step size (Tieleman 2008)
@pytest.mark.parametrize(("persistent", "lr", "epochs"), [(False, 0.01, 8), (True, 0.003, 20)])
def test_contrastive_divergence_raises_the_exact_likelihood(persistent, lr, epochs):
    data = two_topic_corpus()
    counts = data.batch(torch.arange(len(data))).counts
    story = ReplicatedSoftmax(6, 4)
    story.init_background(data)
    before = float(exact_log_prob(story, counts).mean())
    recon_before = float(reconstruction_error(story, counts).sum() / counts.sum())
    inference = ContrastiveDivergence(story, 1, persistent, optim_args={"lr": lr})
    history = inference.fit(data, epochs=epochs, batch_size=20, progress=False)
    after = float(exact_log_prob(story, counts).mean())
    recon_after = float(reconstruction_error(story, counts).sum() / counts.sum())
    assert after > before + 1.0, (before, after)  # nats per document of ~8 tokens
    assert recon_after < recon_before - 0.1
    assert {"loss", "reconstruction", "gibbs_steps", "lr"} <= set(history[-1])


def test_the_schedules_of_gibbs_steps_and_momentum():
    objective = ContrastiveObjective(
        max_steps=5, increase_every=100, momentum=0.5, final_momentum=0.9, momentum_epochs=5
    )
    assert [objective.steps(1, t) for t in (0, 99, 100, 399, 400, 10**6)] == [1, 1, 2, 4, 5, 5]
    assert objective.steps(10, 500) == 10
    assert [objective.momentum_at(e) for e in (0, 4, 5)] == [0.5, 0.5, 0.9]
    with pytest.raises(SettingsError, match="momentum"):
        ContrastiveDivergence(tiny_rsm(), objective=objective)  # Adam has no momentum
    with pytest.raises(SettingsError, match="undirected"):
        ContrastiveDivergence(NVDM(6, 2))
    with pytest.raises(SettingsError, match="together"):
        ContrastiveObjective(max_steps=5)


def train_pcd(data, epochs, start_epoch=0, state=None):
    story = ReplicatedSoftmax(6, 3)
    story.init_background(data)
    objective = ContrastiveObjective(1e-3, 3, 7, 0.5, 0.9, 1)
    inference = ContrastiveDivergence(
        story, 1, True, objective=objective, optimizer="sgd", optim_args={"lr": 0.01}
    )
    if state is not None:
        story.load_state_dict(state.weights["story"])
        inference.load_state_dict(state.state["inference"])
        set_rng_state(state.state["rng"])
    inference.fit(data, epochs=epochs, batch_size=30, seed=3, start_epoch=start_epoch, progress=False)
    return inference


def test_persistent_chains_and_schedules_resume_exactly(tmp_path):
    data = two_topic_corpus(num=100)
    torch.manual_seed(0)
    straight = train_pcd(data, 2)
    torch.manual_seed(0)
    first = train_pcd(data, 1)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"story": first.story}, {"inference": first.state_dict(), "rng": rng_state()}, {})
    torch.manual_seed(123)  # the checkpoint's RNG state, not this, continues the run
    resumed = train_pcd(data, 2, start_epoch=1, state=load_checkpoint(path))
    assert straight.num_steps == resumed.num_steps == 8 and straight.gibbs_steps == 2
    for name, value in straight.story.state_dict().items():
        assert torch.equal(value, resumed.story.state_dict()[name]), name
    assert torch.equal(straight.chains, resumed.chains)
    momenta = [g["momentum"] for g in resumed.trainer.optimizers["story"].param_groups]
    assert momenta == [0.9]


def test_documents_of_unequal_lengths_are_drawn_at_their_lengths():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(4, 3)
    lengths = torch.tensor([1.0, 7.0, 0.0, 3000.0])
    draws = BagOfWordsByLength(logits, total_count=lengths).sample()
    assert draws.sum(-1).tolist() == lengths.tolist()
    assert torch.allclose(draws[3] / 3000, torch.tensor([0.5, 0.3, 0.2]), atol=0.04)


def test_train_rsm_with_cd_and_pcd_and_evaluate_with_ais(tmp_path, capsys):
    tiny = ["--hidden", "4", "--quiet", "--batch-size", "200"]
    run = str(tmp_path / "cd")
    assert main(["train", "rsm", "--out", run, "--epochs", "1", "--inference", "cd:1", *tiny]) == 0
    assert "reconstruction_error" in capsys.readouterr().out
    assert main(["evaluate", run, "--estimator", "ais:3:10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["estimator"] == "ais" and report["inference"] == "cd:1"
    assert math.isfinite(report["perplexity"]) and report["ais_se_max"] > 0
    assert main(["topics", run, "--k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5  # 4 units and their NPMI, diversity

    # persistent CD through the command: 2 epochs straight, or 1 and a resumed 1
    pcd = ["--inference", "pcd:2", *tiny]
    assert main(["train", "rsm", "--out", str(tmp_path / "a"), "--epochs", "2", *pcd]) == 0
    assert main(["train", "rsm", "--out", str(tmp_path / "b"), "--epochs", "1", *pcd]) == 0
    assert main(["train", "rsm", "--out", str(tmp_path / "b"), "--epochs", "2", "--resume", *pcd]) == 0
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.safetensors") for r in "ab")
    assert all(torch.equal(w, b.weights["story"][k]) for k, w in a.weights["story"].items())
    assert torch.equal(a.state["inference"]["chains"], b.state["inference"]["chains"])
    capsys.readouterr()

    assert main(["train", "rsm", "--out", str(tmp_path / "c"), "--inference", "vae", *tiny]) == 2
    assert "cd:K or pcd:K" in capsys.readouterr().err
    assert main(["train", "nvdm", "--out", str(tmp_path / "d"), "--inference", "cd:1", "--quiet"]) == 2
    assert "undirected" in capsys.readouterr().err
