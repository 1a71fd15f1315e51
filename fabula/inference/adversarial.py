r"""Adversarial training of sentence stories: the story's decoder is a generator :math:`G_\theta`
and a discriminator :math:`D_\psi` (:class:`~fabula.nn.discriminator.SentenceDiscriminator`)
tells real sentences from its draws. The story stays what it was, so its exact likelihood (or
bound) is still computed by every estimator: an RNNLM fitted by maximum likelihood and the same
RNNLM fine-tuned adversarially are scored on one table.

The discriminator descends :math:`-\log D(x) - \log(1 - D(\tilde x))` on a real batch and as
many fresh draws. Sampling words is not differentiable, and the generator learns by one of:

* :class:`Reinforce` (SeqGAN, Yu et al. 2017): the policy gradient of the expected reward
  :math:`J(\theta) = E_{Y \sim G_\theta}[D(Y)]`,

  .. math:: \nabla_\theta J = E_{Y}\Big[\sum_t \big(Q(Y_{1:t}) - b\big)
            \nabla_\theta \log G_\theta(y_t \mid Y_{1:t-1})\Big],
            \qquad Q(Y_{1:t}) = E_{Y_{t+1:T} \sim G_\theta}\big[D(Y_{1:T}) \mid Y_{1:t}\big],

  with :math:`Q` estimated by :math:`N` Monte Carlo roll-outs from each prefix
  (:func:`rollout_rewards`; :math:`D(Y)` itself where :math:`y_t` completes the sentence) and
  :math:`b` a running mean of past rewards (it does not depend on the draw, so the estimate
  stays unbiased);
* :class:`GumbelSoftmax` (Kusner & Hernández-Lobato 2016; Jang et al. 2017): each word is
  :math:`y_t = \mathrm{softmax}((\log G_\theta(\cdot \mid y_{<t}) + g_t)/\tau)` with Gumbel noise
  :math:`g_t`, fed to the next step and to the discriminator as weights over the words
  (straight-through: the one-hot argmax forward, the relaxed gradient backward), and the
  generator descends :math:`-\log D(\tilde x)`; :math:`\tau_s = \max(\tau_{min}, \tau_0
  e^{-r s})` after :math:`s` generator steps.

Both start with ``pretrain`` epochs of the story's own objective (maximum likelihood, or the ELBO
of a latent story), then alternate ``critic_steps`` discriminator steps with one generator step.
The generator draws at most ``max_length`` words (a sentence still open then ends there; real
sentences are cut alike for the discriminator), or exactly ``max_length`` with ``fixed`` (SeqGAN's
synthetic setting: ``<eos>`` is never drawn, and appended). ``<pad>`` and ``<bos>`` are never
drawn: the policy is the decoder's distribution over the other words, which
:mod:`fabula.generation` samples at temperature 1. The generator's passes run without dropout.
Written by hand: no library trains Pyro stories adversarially.

References:
  L. Yu, W. Zhang, J. Wang, Y. Yu. SeqGAN: Sequence Generative Adversarial Nets with Policy
  Gradient. AAAI 2017.
  M. Kusner, J. M. Hernández-Lobato. GANS for Sequences of Discrete Elements with the
  Gumbel-softmax Distribution. NeurIPS 2016 workshop on adversarial training.
  E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fabula.data.corpus import DataParallel
from fabula.data.text import BOS, EOS, PAD
from fabula.errors import SettingsError, UsageError
from fabula.generation import categorical
from fabula.inference.sources import Encoded
from fabula.inference.updates import Joint
from fabula.inference.variational import VariationalInference
from fabula.models.capabilities import GeneratesSentences
from fabula.nn import LSTMDecoder, evaluation_mode

#: Sequences a roll-out batch holds at most (the draws of several prefixes go together).
ROLLOUT_CHUNK = 4096


@dataclass
class Draw:
    """Sentences drawn by the generator: ``tokens [N, L + 1]`` (words, ``<eos>``, ``<pad>``),
    ``lengths [N]`` (words and ``<eos>``), the decoder's ``code`` (``None``: no latent) and the LSTM
    ``states`` after reading ``<bos>, y_1, ..., y_{L-1}`` (for roll-outs)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    code: torch.Tensor | None
    states: list

    @property
    def chosen(self) -> torch.Tensor:
        """``[N, L]``: the positions whose word the policy drew (its ``<eos>`` too; not one
        appended at the maximum length)."""
        steps = torch.arange(self.tokens.shape[1] - 1, device=self.tokens.device)
        return steps[None] < self.lengths[:, None]


def finish(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drawn words ``[N, S]`` (each ending at its first ``<eos>``, ``<pad>`` after it) as
    sentences ``[N, S + 1]`` with ``<eos>`` appended to those still open, and their lengths."""
    n, s = words.shape
    ended = words == EOS
    count = torch.where(ended.any(1), ended.int().argmax(1), s)
    tokens = F.pad(words, (0, 1), value=PAD)
    tokens[torch.arange(n, device=words.device), count] = EOS
    return tokens, count + 1


def cut(tokens: torch.Tensor, lengths: torch.Tensor, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences ``[N, T]`` (words and ``<eos>``) cut to at most ``max_length`` words, ``<eos>``
    after them: real sentences as the generator can draw them."""
    words = (lengths - 1).clamp(max=max_length)
    tokens = F.pad(tokens, (0, max(0, max_length + 1 - tokens.shape[1])), value=PAD)[:, : max_length + 1]
    steps = torch.arange(max_length + 1, device=tokens.device)
    tokens = torch.where(steps[None] < words[:, None], tokens, PAD)
    tokens[torch.arange(tokens.shape[0], device=tokens.device), words] = EOS
    return tokens, words + 1


class SentenceGenerator:
    """A sentence story as a policy over words: its decoder under a code drawn from its prior.

    :param story: a story that generates sentences
        (:class:`~fabula.models.capabilities.GeneratesSentences`) with an
        :class:`~fabula.nn.LSTMDecoder`.
    :param max_length: the most words a draw holds.
    :param fixed: draw exactly ``max_length`` words (``<eos>`` is appended, never drawn).
    """

    def __init__(self, story, max_length: int = 50, fixed: bool = False):
        if not isinstance(story, GeneratesSentences) or not isinstance(story.decoder, LSTMDecoder):
            raise UsageError(
                f"adversarial training draws sentences from a story's LSTM decoder, and {type(story).__name__} has none"
            )
        if max_length < 1:
            raise SettingsError(f"max_length must be >= 1, got {max_length}")
        self.story, self.decoder = story, story.decoder
        self.max_length, self.fixed = max_length, fixed
        banned = [PAD, BOS, EOS] if fixed else [PAD, BOS]
        self.banned = torch.tensor(banned)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., V]``: the policy's unnormalised log-probabilities of the next word given the
        decoder's output states (``-inf`` at the words never drawn)."""
        log_probs = self.decoder.out.log_probs(hidden)
        return log_probs.index_fill(-1, self.banned.to(log_probs.device), float("-inf"))

    def policy(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., V]``: log-probabilities of the next word given the decoder's output states,
        over the words that may be drawn."""
        return self.logits(hidden).log_softmax(-1)

    def code(self, num: int) -> torch.Tensor | None:
        """The decoder's code for ``num`` draws, from the story's prior (``None``: no latent)."""
        return self.story.code(self.story.prior_sample(num))

    @torch.no_grad()
    def extend(self, state, last: torch.Tensor, code, steps: int, keep_states: bool = False):
        """``[M, steps]`` words drawn after ``last [M]`` from LSTM ``state`` (``None``: the code's
        start), each row ending at its first ``<eos>``; with ``keep_states``, also the state after
        each input read."""
        words, states = [], []
        done = torch.zeros(last.shape[0], dtype=torch.bool, device=last.device)
        inputs = last[:, None]
        for _ in range(steps):
            hidden, state = self.decoder.step(inputs, state, code)
            if keep_states:
                states.append(state)
            word = categorical(self.logits(hidden[:, -1]))
            word = torch.where(done, PAD, word)
            words.append(word)
            done |= word == EOS
            inputs = word[:, None]
            if done.all() and not keep_states:
                break
        words = torch.stack(words, 1)
        return F.pad(words, (0, steps - words.shape[1]), value=PAD), states

    def draw(self, num: int) -> Draw:
        """``num`` sentences drawn ancestrally, with the states roll-outs start from."""
        with evaluation_mode(self.story), torch.no_grad():
            code = self.code(num)
            device = self.decoder.embed.weight.device
            start = torch.full((num,), BOS, dtype=torch.long, device=device)
            state = self.decoder.start(code, num)
            words, states = self.extend(state, start, code, self.max_length, keep_states=True)
        return Draw(*finish(words), code, states)

    def log_probs(self, draw: Draw) -> torch.Tensor:
        r"""``[N, L]``: :math:`\log G_\theta(y_t \mid Y_{1:t-1})` of each drawn word, with its
        gradient (0 where the policy drew nothing)."""
        words = draw.tokens[:, :-1]
        inputs = torch.cat([torch.full_like(words[:, :1], BOS), words[:, :-1]], 1)
        with evaluation_mode(self.story):
            log_probs = self.policy(self.decoder.hidden(inputs, draw.code))
        picked = log_probs.gather(-1, words[..., None]).squeeze(-1)  # -inf at <pad>: never chosen
        return torch.where(draw.chosen, picked, 0.0)


@torch.no_grad()
def rollout_rewards(generator: SentenceGenerator, critic, draw: Draw, rollouts: int) -> torch.Tensor:
    r"""``[N, L]``: :math:`\hat Q(Y_{1:t})`, the mean of :math:`D` over ``rollouts`` completions of
    each drawn prefix by the generator, and :math:`D(Y)` itself where :math:`y_t` completes the
    sentence (it is ``<eos>``, or the last word allowed); 0 where the policy drew nothing."""
    n, steps = draw.tokens.shape[0], generator.max_length
    words = draw.tokens[:, :steps]
    full = torch.sigmoid(critic(draw.tokens, draw.lengths))
    rewards = torch.zeros(n, steps, device=full.device)
    chosen = draw.chosen
    chunk = max(1, ROLLOUT_CHUNK // rollouts)
    with evaluation_mode(generator.story):
        for t in range(1, steps + 1):
            complete = (words[:, t - 1] == EOS) | (t == steps)
            rewards[:, t - 1] = torch.where(chosen[:, t - 1] & complete, full, 0.0)
            open_rows = (chosen[:, t - 1] & ~complete).nonzero().squeeze(-1)
            for rows in open_rows.split(chunk) if open_rows.numel() else ():
                h, c = draw.states[t - 1]
                state = (h[:, rows].repeat_interleave(rollouts, 1), c[:, rows].repeat_interleave(rollouts, 1))
                code = draw.code[rows].repeat_interleave(rollouts, 0) if draw.code is not None else None
                prefix = words[rows, :t].repeat_interleave(rollouts, 0)
                rest, _ = generator.extend(state, prefix[:, -1], code, steps - t)
                tokens, lengths = finish(torch.cat([prefix, rest], 1))
                scores = torch.sigmoid(critic(tokens, lengths)).reshape(-1, rollouts).mean(1)
                rewards[rows, t - 1] = scores
    return rewards


class Reinforce:
    r"""SeqGAN's generator update (module docstring): REINFORCE with ``rollouts`` Monte Carlo
    roll-outs per prefix and a baseline :math:`b`, the running mean (decay ``decay``) of the
    rewards of earlier steps (0 at the first)."""

    def __init__(self, rollouts: int = 16, decay: float = 0.9):
        if rollouts < 1:
            raise SettingsError(f"rollouts must be >= 1, got {rollouts}")
        if not 0.0 <= decay < 1.0:
            raise SettingsError(f"the baseline's decay must lie in [0, 1), got {decay}")
        self.rollouts, self.decay = rollouts, decay
        self.baseline, self.updates = 0.0, 0

    def loss(self, generator: SentenceGenerator, critic, num: int, step: int) -> tuple[torch.Tensor, dict]:
        r"""The surrogate :math:`-\frac1N \sum_n \sum_t (\hat Q_{nt} - b) \log G_\theta(y_{nt} \mid
        \cdot)` of ``num`` fresh draws (its gradient is minus the policy gradient of :math:`J`), and
        the draws' mean reward :math:`D(Y)`."""
        draw = generator.draw(num)
        rewards = rollout_rewards(generator, critic, draw, self.rollouts)
        chosen = draw.chosen
        advantage = torch.where(chosen, rewards - self.baseline, 0.0)
        loss = -(advantage * generator.log_probs(draw)).sum(1).mean()
        mean = float(rewards[chosen].mean())
        self.baseline = mean if self.updates == 0 else self.decay * self.baseline + (1 - self.decay) * mean
        self.updates += 1
        final = rewards.gather(1, (draw.lengths - 1).clamp(max=generator.max_length - 1)[:, None])
        return loss, {"reward": float(final.mean())}

    def state_dict(self) -> dict:
        return {"baseline": self.baseline, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.baseline, self.updates = float(state["baseline"]), int(state["updates"])


class GumbelSoftmax:
    r"""The Gumbel-softmax generator update (module docstring): relaxed draws at temperature
    :math:`\tau_s = \max(\tau_{min}, \tau_0 e^{-r s})`, straight-through with ``hard``, into the
    non-saturating loss :math:`-\log D(\tilde x)`."""

    def __init__(self, tau: float = 1.0, tau_min: float = 0.5, rate: float = 1e-3, hard: bool = True):
        if not 0 < tau_min <= tau:
            raise SettingsError(f"the temperatures must satisfy 0 < tau_min <= tau, got {tau_min} and {tau}")
        if rate < 0:
            raise SettingsError(f"the temperature's decay rate must be >= 0, got {rate}")
        self.tau, self.tau_min, self.rate, self.hard = tau, tau_min, rate, hard

    def temperature(self, step: int) -> float:
        """:math:`\\tau` after ``step`` generator steps."""
        return max(self.tau_min, self.tau * math.exp(-self.rate * step))

    def relaxed_draw(
        self, generator: SentenceGenerator, num: int, tau: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` relaxed sentences: weights over the words ``[N, S + 1, V]`` (one-hot after each
        sentence's end) with their gradient, and the lengths of the hard draws."""
        decoder = generator.decoder
        code = generator.code(num)
        vocab = decoder.vocab_size
        device = decoder.embed.weight.device
        pad = F.one_hot(torch.tensor(PAD, device=device), vocab).float()
        inputs = F.one_hot(torch.full((num, 1), BOS, device=device), vocab).float()
        state = decoder.start(code, num)
        done = torch.zeros(num, dtype=torch.bool, device=device)
        weights, words = [], []
        with evaluation_mode(generator.story):
            for _ in range(generator.max_length):
                hidden, state = decoder.step(inputs, state, code)
                scores = (
                    generator.logits(hidden[:, -1])
                    - torch.empty(num, vocab, device=device).exponential_().log()
                )
                soft = torch.softmax(scores / tau, -1)
                word = scores.argmax(-1)
                y = F.one_hot(word, vocab).float() - soft.detach() + soft if self.hard else soft
                y = torch.where(done[:, None], pad, y)
                word = torch.where(done, PAD, word)
                weights.append(y)
                words.append(word)
                done = done | (word == EOS)  # not in place: the step's where keeps it for backward
                inputs = y[:, None]
                if done.all():
                    break
        tokens, lengths = finish(torch.stack(words, 1))
        drawn = torch.stack(weights, 1)
        steps = torch.arange(drawn.shape[1], device=device)
        policy_drew = (steps[None] < lengths[:, None])[..., None]
        exact = F.one_hot(tokens, vocab).float()
        return torch.cat([torch.where(policy_drew, drawn, exact[:, :-1]), exact[:, -1:]], 1), lengths

    def loss(self, generator: SentenceGenerator, critic, num: int, step: int) -> tuple[torch.Tensor, dict]:
        r""":math:`-\frac1N \sum_n \log D(\tilde x_n)` of ``num`` relaxed draws at :math:`\tau_{step}`."""
        tau = self.temperature(step)
        weights, lengths = self.relaxed_draw(generator, num, tau)
        logits = critic(weights, lengths)
        return F.softplus(-logits).mean(), {
            "reward": float(torch.sigmoid(logits.detach()).mean()),
            "tau": tau,
        }

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Adversarial(Joint):
    r"""The update policy of adversarial training (module docstring): ``pretrain`` epochs of the
    story's objective (as :class:`~fabula.inference.updates.Joint`), then per batch
    ``critic_steps`` steps of the discriminator ``critic`` on the batch against fresh draws and one
    step of the story on ``generator_loss`` (:class:`Reinforce` or :class:`GumbelSoftmax`). A step
    reports ``loss``, the objective on the batch (the story's negative log-likelihood or bound per
    datum, not stepped on after pre-training), with the critic's loss and the draws' mean reward.

    :param max_length: the most words of a draw (exactly so many with ``fixed``).
    """

    def __init__(
        self,
        critic: torch.nn.Module,
        generator_loss: Reinforce | GumbelSoftmax,
        pretrain: int = 1,
        critic_steps: int = 1,
        max_length: int = 50,
        fixed: bool = False,
    ):
        if pretrain < 0 or critic_steps < 1:
            raise SettingsError(
                f"pretrain must be >= 0 and critic_steps >= 1, got {pretrain} and {critic_steps}"
            )
        self.critic, self.generator_loss = critic, generator_loss
        self.pretrain, self.critic_steps = pretrain, critic_steps
        self.max_length, self.fixed = max_length, fixed
        self.epoch, self.adversarial_steps = 0, 0

    def groups(self, inference) -> dict[str, list]:
        """The story and its λ source for pre-training (none without it), the story as
        generator, the critic."""
        pretraining = super().groups(inference)["joint"] if self.pretrain > 0 else []
        return {
            "joint": pretraining,
            "generator": inference.story_parameters(),
            "critic": list(self.critic.parameters()),
        }

    def begin(self, data) -> None:
        if isinstance(data, DataParallel):
            raise UsageError("adversarial training runs on one process: train it without torchrun")

    def critic_loss(self, generator: SentenceGenerator, batch) -> torch.Tensor:
        r""":math:`-\frac1B \sum_b [\log D(x_b) + \log(1 - D(\tilde x_b))]`: the batch (cut to
        ``max_length`` words) against as many fresh draws."""
        real = self.critic(*cut(batch.targets, batch.lengths, self.max_length))
        draw = generator.draw(batch.size)
        fake = self.critic(draw.tokens, draw.lengths)
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def step(self, inference, batch) -> dict[str, float]:
        if self.epoch < self.pretrain:
            return super().step(inference, batch)
        trainer, step, generator = inference.trainer, inference.num_steps + 1, inference.generator
        for _ in range(self.critic_steps):
            critic = trainer.descend(lambda: self.critic_loss(generator, batch), "critic", step=step)
        metrics = {}

        def generator_loss():
            loss, figures = self.generator_loss.loss(
                generator, self.critic, batch.size, self.adversarial_steps
            )
            metrics.update(figures)
            return loss

        trainer.descend(generator_loss, "generator", step=step)
        self.adversarial_steps += 1
        with torch.no_grad():
            loss = float(inference.loss(batch))
        return {"loss": loss, "critic_loss": critic, **metrics}

    def end_epoch(self, inference) -> dict[str, float]:
        self.epoch += 1
        return {"adversarial": float(self.epoch > self.pretrain)}

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "adversarial_steps": self.adversarial_steps,
            "generator_loss": self.generator_loss.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.adversarial_steps = int(state["epoch"]), int(state["adversarial_steps"])
        self.generator_loss.load_state_dict(state["generator_loss"])


class AdversarialTraining(VariationalInference):
    r"""A sentence story trained adversarially under the :class:`Adversarial` policy ``updates``,
    pre-trained on ``objective`` with the guide's encoder as λ source; the critic is checkpointed as
    module ``"critic"``. Other settings are those of :class:`~fabula.inference.VariationalInference`.

    An RNNLM's SeqGAN step, with 2 roll-outs per prefix, after no pre-training:

    >>> import torch
    >>> from fabula.data.synthetic import synthetic_sentence_corpus
    >>> from fabula.guides import EmptyGuide
    >>> from fabula.inference.adversarial import Adversarial, AdversarialTraining, Reinforce
    >>> from fabula.models import RNNLM
    >>> from fabula.nn.discriminator import SentenceDiscriminator
    >>> _ = torch.manual_seed(0)
    >>> splits, _ = synthetic_sentence_corpus(num_train=32, num_valid=8, num_test=8, vocab_size=30)
    >>> story = RNNLM(30, embed_dim=8, hidden_dim=8)
    >>> policy = Adversarial(SentenceDiscriminator(30, 8, 8), Reinforce(rollouts=2), pretrain=0, max_length=10)
    >>> gan = AdversarialTraining(story, EmptyGuide(), policy)
    >>> sorted(gan.step(splits["train"].batch(torch.arange(16))))
    ['beta', 'critic_loss', 'loss', 'reward']
    >>> sorted(gan.modules())
    ['critic', 'guide', 'story']
    """

    def __init__(self, story, guide, updates: Adversarial, **settings):
        self.generator = SentenceGenerator(story, updates.max_length, updates.fixed)  # refuses others
        super().__init__(story, Encoded(guide), updates=updates, **settings)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "critic": self.updates.critic}
