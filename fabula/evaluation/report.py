"""Evaluate any inference object on a corpus: per-datum bounds and their summaries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fabula.errors import DivergenceError, SettingsError, UsageError
from fabula.evaluation.bounds import (
    iw_log_likelihood,
    mutual_information,
    posterior_means,
    terms_from_traces,
)
from fabula.evaluation.metrics import active_units, perplexities
from fabula.nn.mode import evaluation_mode
from fabula.traces import run_traces, trace_guide

ESTIMATORS = ("elbo", "iw")


@dataclass
class Evaluation:
    """Per-datum results of one estimator; :meth:`summary` gives the reported figures."""

    estimator: str
    samples: int
    nll: torch.Tensor
    kl: torch.Tensor
    tokens: torch.Tensor | None
    posterior_means: torch.Tensor
    mutual_information: float

    def summary(self) -> dict:
        out = {
            "estimator": self.estimator,
            "samples": self.samples,
            "num_data": int(self.nll.numel()),
            "nll": float(self.nll.double().mean()),
            "kl": float(self.kl.double().mean()),
            "active_units": active_units(self.posterior_means),
            "mi": self.mutual_information,
        }
        if self.estimator == "elbo":
            # E_q[log p(x | z)] = KL - NLL under the ELBO (of the token sequence, like the NLL)
            out["reconstruction"] = float((self.kl.double() - self.nll.double()).mean())
        if self.tokens is not None:
            out.update(perplexities(self.nll, self.tokens))
            out["num_tokens"] = int(self.tokens.sum())
        return out


@torch.no_grad()
def evaluate(
    inference,
    data,
    estimator: str = "elbo",
    num_samples: int = 1,
    batch_size: int = 256,
    progress: bool = False,
) -> Evaluation:
    r"""Per-datum NLL of ``data`` under ``inference``'s story, with the λ it would use.

    The NLL is of the datum's token sequence where the story observes a sufficient statistic
    of it (see :meth:`~fabula.models.Story.sequence_log_prob_offset`), so that perplexity
    :math:`\exp(\mathrm{NLL}/N)` is per token.

    * ``"elbo"``: :math:`-\mathrm{ELBO} = -E_q[\log p(x\mid z)] + KL(q\|p)`, reconstruction
      averaged over ``num_samples`` draws, KL analytic where available;
    * ``"iw"``: :math:`-\log\frac1S\sum_s p(x,z_s)/q(z_s\mid x)` with ``S = num_samples``.

    ``kl`` is reported with both; active units read the guide's posterior means; ``mi`` is the
    batch-averaged estimate of :func:`~fabula.evaluation.bounds.mutual_information` (it depends
    on ``batch_size``: at most its log). Story and guide are evaluated without dropout.
    """
    if inference.source is None:
        raise UsageError(
            f"evaluate scores a variational q and this {type(inference).__name__} has none (its source is "
            "None); evaluate the inference that fitted the story, and compare MCMC draws with "
            "fabula.diagnostics.posterior_error"
        )
    if estimator not in ESTIMATORS:
        raise SettingsError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")
    if num_samples < 1:
        raise SettingsError(f"num_samples must be >= 1, got {num_samples}")
    with evaluation_mode(inference.story, inference.guide):
        return _evaluate(inference, data, estimator, num_samples, batch_size, progress)


def _evaluate(inference, data, estimator, num_samples, batch_size, progress) -> Evaluation:
    story, guide = inference.story, inference.guide
    device = story.device
    nll, kl, tokens, means, mi = [], [], [], [], []
    batches = data.batches(batch_size, device=device)
    for batch in tqdm(
        batches,
        total=data.num_batches(batch_size),
        desc=f"evaluate ({estimator}, S={num_samples})",
        disable=not progress,
        leave=False,
    ):
        params = inference.local_params(batch)
        traced = num_samples if estimator == "elbo" else 1
        model_trace, guide_trace = run_traces(story, guide, batch, traced, params)
        recon, kls = terms_from_traces(model_trace, guide_trace)
        kl_b = sum(kls.values(), torch.zeros_like(recon))
        if estimator == "elbo":
            nll_b = kl_b - recon
        else:
            nll_b = -iw_log_likelihood(story, guide, batch, num_samples, params)
        nll.append(nll_b + story.sequence_log_prob_offset(batch))
        kl.append(kl_b)
        n_tokens = story.num_tokens(batch)
        if n_tokens is not None:
            tokens.append(n_tokens)
        means.append(posterior_means(guide_trace, story.latent_sites, batch.size))
        one_draw = guide_trace if traced == 1 else trace_guide(guide, batch, 1, params)
        mi.append(mutual_information(one_draw, story.latent_sites) * batch.size)
    nll_t = torch.cat(nll).cpu()
    if not torch.isfinite(nll_t).all():
        bad = int((~torch.isfinite(nll_t)).nonzero()[0])
        raise DivergenceError(f"non-finite NLL for datum {bad} of the evaluated data")
    return Evaluation(
        estimator=estimator,
        samples=num_samples,
        nll=nll_t,
        kl=torch.cat(kl).cpu(),
        tokens=torch.cat(tokens).cpu() if tokens else None,
        posterior_means=torch.cat(means).cpu(),
        mutual_information=float(sum(mi)) / len(data),
    )
