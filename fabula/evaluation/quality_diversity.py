r"""The measures of the quality-diversity curve of a sentence generator (Caccia et al. 2020).

A generator swept over a knob (the softmax temperature, say) trades quality for diversity; Caccia
et al. plot one against the other, so that models are compared along the whole curve rather than
at one point of it.

* **Quality**, the *LM score* (:func:`lm_score`): the NLL of the samples :math:`\hat x_{1:M}`
  under a language model :math:`p_{\mathrm{LM}}` trained on real data, in nats per token,

  .. math::

      \mathrm{LM}(\hat x) = -\frac{\sum_m \log p_{\mathrm{LM}}(\hat x_m)}{\sum_m (|\hat x_m| + 1)}

  (words plus ``<eos>``, fabula's convention): low when the samples look like the data.
* **Diversity**, the *reverse LM score* (:func:`reverse_lm_score`): the NLL per token of the real
  test sentences :math:`x_{1:N}` under a language model :math:`p_{\hat x}` trained on the samples
  (:func:`train_language_model`): low when the samples cover the data, high when they are few
  modes of it, however good each one is.
* **Self-BLEU** (:func:`self_bleu`, Zhu et al. 2018): BLEU of the samples with each one's
  references all the *other* samples; high when the samples repeat one another.

References:

* M. Caccia, L. Caccia, W. Fedus, H. Larochelle, J. Pineau, L. Charlin. Language GANs Falling
  Short. ICLR 2020.
* Y. Zhu, S. Lu, L. Zheng, J. Guo, W. Zhang, J. Wang, Y. Yu. Texygen: A Benchmarking Platform for
  Text Generation Models. SIGIR 2018.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Hashable, Sequence

import pyro
import torch

from fabula.data.text import TextBatch, TextCorpus, TextVocab
from fabula.errors import DivergenceError
from fabula.evaluation.bleu import _check_max_n, _closest_length, _ngrams, _Stats
from fabula.guides import EmptyGuide
from fabula.inference import Amortized
from fabula.models.rnnlm import RNNLM

__all__ = ["lm_score", "reverse_lm_score", "self_bleu", "train_language_model"]


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise DivergenceError(f"{what} is {value}, not a finite number")
    return value


def _closest_other_length(hyp_len: int, sorted_lengths: Sequence[int]) -> int:
    """:func:`~fabula.evaluation.bleu._closest_length` of ``hyp_len`` among ``sorted_lengths``
    (ascending, holding ``hyp_len``, at least two entries) with one ``hyp_len`` removed: the
    hypothesis's own length, never its reference. The closest of the others is one of the
    neighbours of that entry (another ``hyp_len``, if any, is the one just after it), so only
    those two are searched."""
    j = bisect_left(sorted_lengths, hyp_len)  # the first hyp_len, taken as the sample's own
    neighbours = [*sorted_lengths[max(j - 1, 0) : j], *sorted_lengths[j + 1 : j + 2]]
    return _closest_length(hyp_len, neighbours)


def self_bleu(samples: Sequence[Sequence[Hashable]], max_n: int = 4, smooth: bool = False) -> float:
    r"""Self-BLEU in ``[0, 100]``: the corpus BLEU of the samples, each sample :math:`h_i` with
    references :math:`R_i = \{h_j : j \ne i\}`, all the others but never itself,

    .. math::

        \mathrm{SelfBLEU}(h_{1:M}) = \mathrm{BLEU}\big(h_{1:M};\ R_i = h_{1:M} \setminus \{h_i\}\big),

    so that no sample is credited with matching itself (copies of one sentence score 100,
    sentences with no word in common 0). Higher is *less* diverse.
    This is the corpus form of :func:`~fabula.evaluation.bleu.corpus_bleu` (clipped counts and
    lengths summed over the samples before the precisions are taken), not Texygen's mean of
    per-sentence BLEU.

    Equal to ``corpus_bleu(samples, [samples[:i] + samples[i+1:] for i in ...])``, in time linear
    in the samples' total size: for each n-gram :math:`g` the largest count in one sample,
    :math:`c^{(1)}_g`, its owner :math:`o_g`, and the second largest, :math:`c^{(2)}_g` (another
    sample's, 0 if none has it), so that :math:`\max_{j \ne i} \#_{h_j}(g)` is :math:`c^{(2)}_g`
    for :math:`i = o_g` and :math:`c^{(1)}_g` otherwise; the reference length of :math:`h_i` is the
    closest to :math:`|h_i|` among the sorted lengths with one :math:`|h_i|` removed.

    :param samples: at least two token lists (the generated sentences).
    :param max_n: the highest n-gram order (uniform weights ``1 / max_n``).
    :param smooth: add one to the matches and totals of the orders ``n > 1``.
    :raises ValueError: for fewer than two samples (a lone sample has no reference).
    """
    _check_max_n(max_n)
    if len(samples) < 2:
        raise ValueError(
            f"self-BLEU needs at least 2 samples, got {len(samples)}: "
            "each sample's references are the other samples"
        )
    counts = [[_ngrams(sample, n) for n in range(1, max_n + 1)] for sample in samples]
    first: dict[tuple, int] = {}  # the largest count of each n-gram in one sample
    owner: dict[tuple, int] = {}  # the sample holding it
    second: dict[tuple, int] = {}  # the largest count in any other sample
    for i, orders in enumerate(counts):
        for order in orders:
            for g, k in order.items():
                if k > first.get(g, 0):
                    if g in first:
                        second[g] = first[g]
                    first[g], owner[g] = k, i
                elif k > second.get(g, 0):
                    second[g] = k
    lengths = sorted(len(sample) for sample in samples)
    stats = _Stats(max_n)
    for i, (sample, orders) in enumerate(zip(samples, counts, strict=True)):
        others_max = {g: second.get(g, 0) if owner[g] == i else first[g] for order in orders for g in order}
        stats.add(sample, others_max, _closest_other_length(len(sample), lengths))
    return _finite(stats.bleu(smooth), "self-BLEU")


def lm_score(scorer, samples: Sequence[Sequence[int]], batch_size: int = 256) -> float:
    r"""The NLL in nats per token of ``samples`` under ``scorer``: Caccia et al.'s *LM score*
    (quality; lower is better),

    .. math::

        -\frac{\sum_m \log p(\hat x_m)}{\sum_m (|\hat x_m| + 1)},

    the tokens counting the words and ``<eos>`` (an empty sentence is its ``<eos>`` alone).

    :param scorer: a story with an exact ``log_prob(batch)`` per sentence, an
        :class:`~fabula.models.RNNLM` say (in eval mode, as :func:`train_language_model` leaves it).
    :param samples: word-id lists without ``<bos>``/``<eos>``.
    :param batch_size: sentences scored at once.
    :raises DivergenceError: where the NLL is not finite (a sentence of probability 0).
    """
    if len(samples) == 0:
        raise ValueError("samples is empty: the LM score needs at least one sentence")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = scorer.device
    total_log_prob, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = TextBatch.from_ids(samples[start : start + batch_size]).to(device)
            total_log_prob += float(scorer.log_prob(batch).double().sum())
            total_tokens += int(scorer.num_tokens(batch).sum())
    return _finite(-total_log_prob / total_tokens, "the NLL per token")


def train_language_model(
    sentences: Sequence[Sequence[int]],
    vocab: TextVocab,
    embed_dim: int = 256,
    hidden_dim: int = 256,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    output: str = "full",
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> RNNLM:
    r"""An :class:`~fabula.models.RNNLM` fitted to ``sentences`` by maximum likelihood: Adam at
    ``lr`` on :math:`-\log p(x)` per sentence through :class:`~fabula.inference.Amortized` with an
    :class:`~fabula.guides.EmptyGuide` (the ``rnnlm`` recipe: with no latent the ELBO is the
    exact log-likelihood), its output layer arranged by the sentences' word counts first
    (:meth:`~fabula.models.sentence.SentenceStory.fit_output`). The same ``seed`` gives the same
    weights (``torch.manual_seed`` and ``pyro.set_rng_seed`` before the model is built, and the
    batches' order). Returned in eval mode.

    :param sentences: word-id lists of ``vocab``, without ``<bos>``/``<eos>``.
    :param vocab: their :class:`~fabula.data.TextVocab`; the model's vocabulary.
    :param output: the decoder's output layer (``"full"`` softmax or another of
        :class:`~fabula.nn.LSTMDecoder`'s).
    :param device: where the model is built and trained.
    :raises DivergenceError: where a training loss is not finite.
    """
    if len(sentences) == 0:
        raise ValueError("sentences is empty: a language model needs at least one sentence to fit")
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    corpus = TextCorpus(sentences, vocab, name="language model's training sentences")
    story = RNNLM(len(vocab), embed_dim, hidden_dim, output=output).to(device)
    story.fit_output(corpus)
    inference = Amortized(story, EmptyGuide(), optim_args={"lr": lr})
    inference.fit(corpus, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress)
    return story.eval()


def reverse_lm_score(
    samples: Sequence[Sequence[int]], test_sentences: Sequence[Sequence[int]], vocab: TextVocab, **training
) -> float:
    r"""Caccia et al.'s *reverse LM score* (diversity; lower is better): the NLL in nats per
    token (:func:`lm_score`) of the real ``test_sentences`` under a language model trained on the
    generated ``samples`` (:func:`train_language_model` with ``training``'s settings),

    .. math::

        -\frac{\sum_n \log p_{\hat x}(x_n)}{\sum_n (|x_n| + 1)}, \qquad
        p_{\hat x} = \operatorname{argmax}_p \sum_m \log p(\hat x_m).

    Samples that cover the data train a model that explains it; samples of few modes do not.

    :param samples: generated word-id lists of ``vocab`` (the model's training sentences).
    :param test_sentences: real word-id lists of ``vocab`` (scored).
    :param training: keyword arguments of :func:`train_language_model`.
    """
    model = train_language_model(samples, vocab, **training)
    return lm_score(model, test_sentences)
