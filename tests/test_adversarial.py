"""Adversarial training (fabula.inference.adversarial): SeqGAN's policy gradient against the exact
gradient of the expected reward on an enumerable toy, roll-out rewards against their definition,
the Gumbel-softmax draws, and resume from the command's checkpoints."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fabula.checkpoint import load_checkpoint
from fabula.cli import main
from fabula.data.text import BOS, EOS, PAD, UNK, TextBatch
from fabula.errors import SettingsError, UsageError
from fabula.guides import EmptyGuide
from fabula.inference.adversarial import (
    Adversarial,
    AdversarialTraining,
    GumbelSoftmax,
    Reinforce,
    SentenceGenerator,
    cut,
    finish,
    rollout_rewards,
)
from fabula.models import LSTMVAE, NVDM, RNNLM
from fabula.nn.discriminator import SentenceDiscriminator
from fabula.run import TrainConfig, load_run, train
from fabula.rundir import RunDirectory

# The toy: 6 ids, of which <unk>, 4 and 5 are the three words the policy may draw besides <eos>,
# at most 3 words per sentence (an open sentence ends after the third).
VOCAB, WORDS, LENGTH = 6, (UNK, 4, 5), 3


def toy(seed: int = 0):
    torch.manual_seed(seed)
    story = RNNLM(VOCAB, embed_dim=4, hidden_dim=4)
    with torch.no_grad():
        for p in story.parameters():
            p.mul_(3)  # a policy far from uniform
    critic = SentenceDiscriminator(VOCAB, 4, 4)
    for p in critic.parameters():
        p.requires_grad_(False)
        p.mul_(8)  # rewards that differ from sentence to sentence
    return story, critic


def every_sentence() -> list[list[int]]:
    """Every sentence the toy policy can draw, as its drawn tokens (words, then <eos> if drawn)."""
    out = []
    for k in range(LENGTH + 1):
        for words in itertools.product(WORDS, repeat=k):
            out.append([*words, EOS] if k < LENGTH else list(words))
    return out


def token_log_probs(story, drawn: list[list[int]]) -> torch.Tensor:
    """``[N, LENGTH]``: log pi of each drawn token, written from the decoder's log-probabilities
    with <pad> and <bos> removed (0 after the draw ends)."""
    rows = torch.tensor([d + [PAD] * (LENGTH - len(d)) for d in drawn])
    inputs = torch.cat([torch.full((len(drawn), 1), BOS), rows[:, :-1]], 1)
    logits = story.decoder(inputs)
    allowed = torch.tensor([EOS, *WORDS])
    policy = logits[..., allowed].log_softmax(-1)
    position = {int(t): i for i, t in enumerate(allowed)}
    index = torch.tensor([[position.get(int(t), 0) for t in row] for row in rows])
    picked = policy.gather(-1, index[..., None]).squeeze(-1)
    drawn_mask = torch.tensor([[i < len(d) for i in range(LENGTH)] for d in drawn])
    return torch.where(drawn_mask, picked, 0.0)


def critic_value(critic, drawn: list[list[int]]) -> torch.Tensor:
    """D of each sentence (<eos> appended where the draw did not end with one)."""
    words = [[t for t in d if t != EOS] for d in drawn]
    tokens = torch.tensor([w + [EOS] + [PAD] * (LENGTH - len(w)) for w in words])
    return torch.sigmoid(critic(tokens, torch.tensor([len(w) + 1 for w in words])))


def flat_grad(value, params) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, allow_unused=False)])


def test_the_toy_enumerates_every_draw():
    story, _ = toy()
    drawn = every_sentence()
    total = token_log_probs(story, drawn).sum(1).exp().sum()
    assert len(drawn) == 40 and total.item() == pytest.approx(1.0, abs=1e-5)


def test_reinforce_gradient_matches_the_exact_gradient_of_the_expected_reward():
    story, critic = toy()
    params = list(story.parameters())
    drawn = every_sentence()
    expected_reward = (token_log_probs(story, drawn).sum(1).exp() * critic_value(critic, drawn)).sum()
    exact = flat_grad(expected_reward, params)
    generator = SentenceGenerator(story, max_length=LENGTH)
    reinforce = Reinforce(rollouts=4)
    torch.manual_seed(1)
    estimates = torch.stack(
        [-flat_grad(reinforce.loss(generator, critic, 4000, 0)[0], params) for _ in range(16)]
    )
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    assert exact.norm() > 1e-3  # a gradient worth checking
    assert ((mean - exact).abs() <= 5 * se + 1e-6).all()
    assert (mean - exact).norm() < 0.1 * exact.norm()


def test_rollout_rewards_are_the_expected_critic_value_given_the_prefix():
    story, critic = toy(seed=2)
    generator = SentenceGenerator(story, max_length=LENGTH)
    drawn = every_sentence()
    log_pi = token_log_probs(story, drawn).detach()
    value = critic_value(critic, drawn)
    torch.manual_seed(3)
    draw = generator.draw(6)
    rewards = rollout_rewards(generator, critic, draw, rollouts=20000)
    for n in range(6):
        tokens = draw.tokens[n].tolist()
        words = draw.lengths[n].item() - 1
        drawn_n = tokens[: words + 1] if words < LENGTH else tokens[:LENGTH]
        for t in range(1, len(drawn_n) + 1):
            prefix = drawn_n[:t]
            if prefix[-1] == EOS or t == LENGTH:  # complete: D itself
                exact = value[drawn.index(drawn_n)]
                assert rewards[n, t - 1].item() == pytest.approx(exact.item(), abs=1e-6)
                continue
            extends = [i for i, d in enumerate(drawn) if d[:t] == prefix]
            weights = (log_pi[extends].sum(1) - log_pi[extends, :t].sum(1)).exp()
            assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)
            exact = (weights * value[extends]).sum()
            assert abs(rewards[n, t - 1].item() - exact.item()) < 0.02  # 5.6 standard errors at most
        assert (rewards[n, len(drawn_n) :] == 0).all()


def test_fixed_length_draws_never_end_early():
    story, _ = toy()
    draw = SentenceGenerator(story, max_length=5, fixed=True).draw(200)
    assert (draw.lengths == 6).all() and (draw.tokens[:, 5] == EOS).all()
    assert not (draw.tokens[:, :5] == EOS).any() and draw.chosen.all()


def test_finish_and_cut():
    tokens, lengths = finish(torch.tensor([[4, EOS, PAD], [4, 5, 4]]))
    assert tokens.tolist() == [[4, EOS, PAD, PAD], [4, 5, 4, EOS]] and lengths.tolist() == [2, 4]
    real = torch.tensor([[4, 5, 4, 5, EOS], [4, EOS, PAD, PAD, PAD]])
    tokens, lengths = cut(real, torch.tensor([5, 2]), 2)
    assert tokens.tolist() == [[4, 5, EOS], [4, EOS, PAD]] and lengths.tolist() == [3, 2]


def test_the_critic_reads_one_hot_weights_as_word_ids():
    critic = SentenceDiscriminator(VOCAB, 4, 4)
    tokens, lengths = torch.tensor([[4, 5, EOS, PAD], [5, EOS, PAD, PAD]]), torch.tensor([3, 2])
    weights = torch.nn.functional.one_hot(tokens, VOCAB).float()
    assert torch.allclose(critic(tokens, lengths), critic(weights, lengths), atol=1e-6)


def test_gumbel_draws_are_one_hot_forward_and_carry_the_generator_gradient():
    story, critic = toy()
    generator = SentenceGenerator(story, max_length=LENGTH)
    gumbel = GumbelSoftmax(tau=1.0, tau_min=0.5, rate=0.1)
    weights, lengths = gumbel.relaxed_draw(generator, 64, tau=0.7)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-5)
    assert torch.allclose(weights, torch.nn.functional.one_hot(weights.argmax(-1), VOCAB).float(), atol=1e-5)
    words = weights.argmax(-1)
    assert (words[torch.arange(64), lengths - 1] == EOS).all()
    loss, figures = gumbel.loss(generator, critic, 64, step=0)
    grads = torch.autograd.grad(loss, list(story.parameters()))
    assert sum(g.abs().sum() for g in grads) > 0 and 0 < figures["reward"] < 1
    assert gumbel.temperature(0) == 1.0 and gumbel.temperature(100) == 0.5
    assert gumbel.temperature(3) == pytest.approx(math.exp(-0.3))


def test_refusals():
    with pytest.raises(UsageError, match="LSTM decoder"):
        SentenceGenerator(NVDM(vocab_size=20, latent_dim=2))
    with pytest.raises(SettingsError, match="tau_min"):
        GumbelSoftmax(tau=0.5, tau_min=1.0)
    with pytest.raises(SettingsError, match="rollouts"):
        Reinforce(rollouts=0)


def test_a_latent_story_draws_from_its_prior():
    torch.manual_seed(0)
    story = LSTMVAE(20, latent_dim=3, embed_dim=8, hidden_dim=8)
    gan = AdversarialTraining(
        story,
        EmptyGuide(),
        Adversarial(SentenceDiscriminator(20, 8, 8), Reinforce(2), pretrain=0, max_length=6),
    )
    draw = SentenceGenerator(story, 6).draw(5)
    assert draw.code.shape == (5, 3)
    assert sorted(gan.modules()) == ["critic", "guide", "story"]


def write_corpus(folder, seed=0):
    """A tiny corpus of one's own: sentences over 12 words."""
    generator = torch.Generator().manual_seed(seed)
    words = [f"w{i}" for i in range(12)]

    def lines(n):
        out = []
        for _ in range(n):
            k = int(torch.randint(1, 7, (1,), generator=generator))
            out.append(" ".join(words[int(i)] for i in torch.randint(0, 12, (k,), generator=generator)))
        return "\n".join(out) + "\n"

    folder.mkdir()
    (folder / "train.txt").write_text(lines(48))
    (folder / "test.txt").write_text(lines(16))
    return folder


@pytest.mark.parametrize("spec", ["seqgan:2,pretrain=1,max_length=8", "gumbel-gan:pretrain=1,max_length=8"])
def test_resume_equals_an_uninterrupted_run(spec, tmp_path):
    data = write_corpus(tmp_path / "corpus")

    def config(epochs):
        return TrainConfig.create(
            "rnnlm", data=str(data), inference=spec, epochs=epochs, embed_dim=8, hidden_dim=8, batch_size=16
        )

    train(config(3), tmp_path / "straight", progress=False)
    train(config(2), tmp_path / "split", progress=False)
    train(config(3), tmp_path / "split", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / run / RunDirectory.CHECKPOINT) for run in ("straight", "split"))
    assert sorted(a.weights) == ["critic", "story"]  # the empty guide has no weights
    for name in a.weights:
        for key in a.weights[name]:
            assert torch.equal(a.weights[name][key], b.weights[name][key]), (name, key)
    untimed = [{k: v for k, v in m.items() if k != "train_seconds"} for m in a.metadata["history"]]
    assert untimed == [{k: v for k, v in m.items() if k != "train_seconds"} for m in b.metadata["history"]]
    assert [m["adversarial"] for m in untimed] == [0.0, 1.0, 1.0]
    assert "critic_loss" in untimed[-1] and "critic_loss" not in untimed[0]
    assert type(load_run(tmp_path / "split").inference) is AdversarialTraining


def test_train_and_compare_from_the_command_line(tmp_path, capsys):
    data = write_corpus(tmp_path / "corpus")
    tiny = ["--data", str(data), "--embed-dim", "8", "--hidden-dim", "8", "--batch-size", "16", "--quiet"]
    run = str(tmp_path / "run")
    assert (
        main(["train", "rnnlm", "--inference", "seqgan:2,max_length=8", "--epochs", "2", "--out", run, *tiny])
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", run, "--json"]) == 0
    assert '"inference": "seqgan:2,max_length=8"' in capsys.readouterr().out
    assert (
        main(["train", "nvdm", "--inference", "seqgan", "--out", str(tmp_path / "refused"), "--quiet"]) == 2
    )
    assert "seqgan needs a story with the GeneratesSentences capability" in capsys.readouterr().err
    kinds = ["vae", "seqgan:2,max_length=8", "gumbel-gan:max_length=8"]
    compared = ["compare", "--story", "rnnlm", "--inference", *kinds, "--seeds", "1", "--epochs", "2"]
    sizes = [
        "--data",
        str(data),
        "--hidden-dim",
        "8",
        "--batch-size",
        "16",
        "--train-size",
        "32",
        "--test-size",
        "8",
    ]
    assert main([*compared, *sizes, "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert all(kind in table for kind in kinds)
    assert table.count("(exact)") == 3 and "collapsed" not in table  # no latent: exact NLL, no KL


@pytest.mark.parametrize("kind", ["seqgan", "gumbel-gan"])
def test_an_adversarial_step_on_the_device(kind, device):
    torch.manual_seed(0)
    story = RNNLM(VOCAB, embed_dim=4, hidden_dim=4).to(device)
    generator_loss = Reinforce(rollouts=2) if kind == "seqgan" else GumbelSoftmax()
    critic = SentenceDiscriminator(VOCAB, 4, 4).to(device)
    gan = AdversarialTraining(
        story, EmptyGuide(), Adversarial(critic, generator_loss, pretrain=0, max_length=LENGTH)
    )
    before = [p.detach().clone() for p in story.parameters()]
    metrics = gan.step(TextBatch.from_ids([[4, 5], [UNK], [5, 5, 4, 4]]).to(device))
    assert all(math.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, story.parameters(), strict=True))
