"""Evaluate any inference object on a corpus: per-datum bounds and their summaries."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fabula.errors import DivergenceError, SettingsError
from fabula.evaluation.bounds import (
    mutual_information,
    posterior_means,
    terms_from_traces,
)
from fabula.evaluation.estimators import (
    ELBO,
    BatchTerms,
    Estimator,
    default_estimator,
    parse_estimator,
    spec_of,
)
from fabula.evaluation.metrics import AU_THRESHOLD, active_units, perplexities
from fabula.nn.mode import evaluation_mode
from fabula.particles import run_traces
from fabula.traces import trace_guide


@dataclass
class Evaluation:
    """Per-datum results of one estimator; :meth:`summary` gives the reported figures. The
    guide's diagnostics (``kl``, ``posterior_means``, ``mutual_information``) are ``None`` for
    an inference object without a variational q; ``diagnostics`` holds the estimator's own
    per-datum figures (``khat`` of ``iw-draws``), summarised by their mean and maximum."""

    estimator: str
    samples: int
    nll: torch.Tensor
    kl: torch.Tensor | None
    tokens: torch.Tensor | None
    posterior_means: torch.Tensor | None
    mutual_information: float | None
    mutual_information_se: float | None = None
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)

    def summary(self) -> dict:
        out = {
            "estimator": self.estimator,
            "samples": self.samples,
            "num_data": int(self.nll.numel()),
            "nll": float(self.nll.double().mean()),
        }
        if self.kl is not None:
            out["kl"] = float(self.kl.double().mean())
            out["active_units"] = active_units(self.posterior_means)
            out["mi"] = self.mutual_information
            out["au_threshold"] = AU_THRESHOLD
            if self.mutual_information_se is not None:
                out["mi_se"] = self.mutual_information_se
        if self.estimator == ELBO.name:
            # E_q[log p(x | z)] = KL - NLL under the ELBO (of the token sequence, like the NLL)
            out["reconstruction"] = float((self.kl.double() - self.nll.double()).mean())
        for name, value in self.diagnostics.items():
            out[f"{name}_mean"], out[f"{name}_max"] = float(value.double().mean()), float(value.max())
        if self.tokens is not None:
            out.update(perplexities(self.nll, self.tokens))
            out["num_tokens"] = int(self.tokens.sum())
        return out


@torch.no_grad()
def evaluate(
    inference,
    data,
    estimator: Estimator | str | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Evaluation:
    r"""Per-datum NLL of ``data`` under ``inference``'s story, with the λ it would use.

    ``estimator`` is an :mod:`~fabula.evaluation.estimators` object or its spec (``"elbo"``,
    ``"elbo:S"``, ``"iw:S"``, ``"iw-draws:S"``, ``"exact"``), refusing an inference object it
    cannot score; by default the story's exact likelihood where it has one (or where its latents
    are all finite and summed out), else the ELBO with one draw. The NLL is of the datum's token sequence (a story
    observing word counts scores the sequence they summarise:
    :class:`~fabula.distributions.BagOfWordsMultinomial`), so that perplexity
    :math:`\exp(\mathrm{NLL}/N)` is per token.

    With a variational q, ``kl`` (analytic where available, averaged over the estimator's
    draws), active units (of the guide's posterior means, :func:`~fabula.evaluation.metrics.active_units`)
    and ``mi`` (the batch-averaged :func:`~fabula.evaluation.bounds.mutual_information`, at most
    ``log batch_size``; a minibatch estimate, which may fall below 0 where q barely depends on
    x: ``mi_se`` is its standard error between batches) are
    reported too. Story and guide are evaluated without dropout.

    A tiny NVDM fitted for two epochs, scored by the importance-weighted bound with 50 draws per
    document, which is tighter than the ELBO's one draw:

    >>> import math, torch
    >>> from fabula.data import synthetic_nvdm_corpus
    >>> from fabula.evaluation import ImportanceWeighted, evaluate
    >>> from fabula.guides import NormalGuide
    >>> from fabula.inference import Amortized
    >>> from fabula.models import NVDM
    >>> _ = torch.manual_seed(0)
    >>> data, _ = synthetic_nvdm_corpus(num_train=64, num_test=16, vocab_size=40, latent_dim=3, mean_length=30)
    >>> vi = Amortized(NVDM(40, 4), NormalGuide(40, 4, hidden=[16]), optim_args={"lr": 1e-2})
    >>> _ = vi.fit(data["train"], epochs=2, batch_size=16, progress=False)
    >>> report = evaluate(vi, data["test"], ImportanceWeighted(50))  # or the spec "iw:50"
    >>> report.nll.shape  # one NLL per document
    torch.Size([16])
    >>> summary = report.summary()
    >>> summary["estimator"], summary["samples"], summary["num_data"], summary["num_tokens"]
    ('iw', 50, 16, 486)
    >>> sorted(summary)
    ['active_units', 'au_threshold', 'corpus_perplexity', 'estimator', 'kl', 'mi', 'nll', 'num_data', 'num_tokens', 'perplexity', 'samples']
    >>> summary["nll"] < evaluate(vi, data["test"], "elbo").summary()["nll"]
    True
    >>> math.isclose(summary["perplexity"], (report.nll / report.tokens).mean().exp().item(), rel_tol=1e-6)
    True
    """
    if estimator is None:
        estimator = default_estimator(inference.story, data)
    elif isinstance(estimator, str):
        estimator = parse_estimator(estimator)
    estimator.check(inference)
    if batch_size < 1:
        raise SettingsError(f"batch_size must be >= 1, got {batch_size}")
    with evaluation_mode(inference.story, inference.guide):
        return _evaluate(inference, data, estimator, batch_size, progress)


def _between_batches(weighted: list, sizes: list[int]) -> float | None:
    r"""The standard error of the data-weighted mean of per-batch estimates (``weighted``: each
    batch's estimate times its size), from their spread between batches; ``None`` with one batch."""
    if len(sizes) < 2:
        return None
    n = torch.tensor(sizes, dtype=torch.float64)
    values = torch.tensor([float(w) for w in weighted], dtype=torch.float64) / n
    mean = (values * n).sum() / n.sum()
    variance = ((n * (values - mean) ** 2).sum() / n.sum()) * len(sizes) / (len(sizes) - 1)
    return float((variance / len(sizes)).sqrt())


def _evaluate(inference, data, estimator, batch_size, progress) -> Evaluation:
    story, guide = inference.story, inference.guide
    diagnosed = inference.source is not None
    nll, kl, tokens, means, mi, sizes, extra = [], [], [], [], [], [], {}
    for batch in tqdm(
        data.batches(batch_size, device=story.device),
        total=data.num_batches(batch_size),
        desc=f"evaluate ({spec_of(estimator)})",
        disable=not progress,
        leave=False,
    ):
        terms = BatchTerms(inference, batch)
        if diagnosed:
            terms.params = inference.local_params(batch)
            replay, guide_trace = run_traces(story, guide, batch, estimator.particles, terms.params)
            terms.reconstruction, kls = terms_from_traces(replay, guide_trace)
            terms.kl = sum(kls.values(), torch.zeros_like(terms.reconstruction))
            kl.append(terms.kl)
            means.append(posterior_means(guide_trace, story.latent_sites, batch.size))
            one_draw = guide_trace if estimator.particles == 1 else trace_guide(guide, batch, 1, terms.params)
            mi.append(mutual_information(one_draw, story.latent_sites) * batch.size)
            sizes.append(batch.size)
        nll.append(-estimator.log_likelihood(terms))
        for name, value in terms.diagnostics.items():
            extra.setdefault(name, []).append(value)
        n_tokens = story.num_tokens(batch)
        if n_tokens is not None:
            tokens.append(n_tokens)
    nll_t = torch.cat(nll).cpu()
    if not torch.isfinite(nll_t).all():
        bad = int((~torch.isfinite(nll_t)).nonzero()[0])
        raise DivergenceError(f"non-finite NLL for datum {bad} of the evaluated data ({spec_of(estimator)})")
    return Evaluation(
        estimator=estimator.name,
        samples=estimator.samples,
        nll=nll_t,
        kl=torch.cat(kl).cpu() if diagnosed else None,
        tokens=torch.cat(tokens).cpu() if tokens else None,
        posterior_means=torch.cat(means).cpu() if diagnosed else None,
        mutual_information=float(sum(mi)) / len(data) if diagnosed else None,
        mutual_information_se=_between_batches(mi, sizes) if diagnosed else None,
        diagnostics={name: torch.cat(v).cpu() for name, v in extra.items()},
    )
