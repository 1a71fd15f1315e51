"""The way to start: write a story fabula does not ship, fit it with every inference object that
applies, compare them on one table, export the posteriors to ArviZ and check the fit with
posterior predictive draws.

The story is a logistic-normal mixture of topics (the "NVLDA" of Srivastava & Sutton 2017):

    z ~ N(0, I_K),   theta = softmax(z),   x | z ~ Mult(N, theta @ softmax(beta))

with K topics beta (word distributions). fabula ships NVDM, whose words come from
softmax(W z + b); this story mixes topics instead. Nothing below is specific to it: the same
lines fit any story with a Gaussian latent.

    python examples/own_story.py                      # synthetic corpus, no download
    python examples/own_story.py --data-dir ../shared/data --epochs 10 --train-docs 0

References: A. Srivastava, C. Sutton. Autoencoding Variational Inference for Topic Models. ICLR 2017.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive

from fabula.data import load_dataset, synthetic_nvdm_corpus
from fabula.devices import cpu_threads
from fabula.diagnostics import to_arviz
from fabula.diagnostics.arviz import az
from fabula.distributions import BagOfWordsMultinomial
from fabula.evaluation import ImportanceFromDraws, ImportanceWeighted, evaluate
from fabula.guides import NormalGuide
from fabula.inference import MCMC, NonAmortized, Refinement, refined
from fabula.inference.kinds import Setup, Training, build
from fabula.models import Story


class TopicMixture(Story):
    """Words from a mixture of ``num_topics`` topics with logistic-normal proportions.

    :param vocab_size: the vocabulary's size (a run gives it from the corpus).
    :param num_topics: topics K, each a distribution over the vocabulary.
    """

    latent_sites = ("z",)
    reads = "documents"  # bags of words: what `fabula train own_story:TopicMixture --data DIR` feeds it

    def __init__(self, vocab_size: int, num_topics: int = 10):
        super().__init__()
        self.remember(locals())
        self.topic_logits = torch.nn.Parameter(0.01 * torch.randn(num_topics, vocab_size))
        self.register_buffer("zeros", torch.zeros(num_topics))

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            words = (z.softmax(-1) @ self.topic_logits.softmax(-1)).log()
            pyro.sample(
                "x",
                BagOfWordsMultinomial(words, total_count=batch.lengths, validate_args=False),
                obs=batch.counts,
            )

    def num_tokens(self, batch):
        return batch.lengths

    def topic_words(self, k: int = 10) -> torch.Tensor:
        """The ids of the ``k`` most probable words of each topic, ``[K, k]`` (what ``fabula topics``
        scores)."""
        return self.topic_logits.detach().topk(k, dim=-1).indices

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The ``k`` most probable words of each topic (what ``fabula topics`` prints)."""
        return [[words[i] for i in row] for row in self.topic_words(k).tolist()]


KINDS = ("vae", "svi:{k}", "vae+svi:{k}", "sa-vae:{k}", "aggressive")


def distinct_words(counts: torch.Tensor) -> torch.Tensor:
    return (counts > 0).sum(-1).double()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder holding 20news/ (default: the synthetic corpus)")
    p.add_argument("--train-docs", type=int, default=1000, help="training documents used (0: all)")
    p.add_argument("--test-docs", type=int, default=200, help="held-out documents scored")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--topics", type=int, default=10)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="refinement steps K of the kinds that take them")
    p.add_argument("--iw-samples", type=int, default=100)
    p.add_argument("--nuts-docs", type=int, default=5, help="held-out documents sampled by NUTS")
    p.add_argument("--nuts-draws", type=int, default=200, help="NUTS draws (and as many warmup steps)")
    p.add_argument("--replicas", type=int, default=50, help="posterior predictive draws per document")
    args = p.parse_args(argv)
    torch.set_num_threads(cpu_threads())  # as the fabula command: FABULA_THREADS, else half the cores

    data = load_dataset("20news", args.data_dir) if args.data_dir else synthetic_nvdm_corpus()[0]
    train, test = data["train"], data["test"].subset(range(min(args.test_docs, len(data["test"]))))
    if args.train_docs:
        train = train.subset(range(min(args.train_docs, len(train))))
    splits = {"train": train, "valid": train.subset(range(min(100, len(train))))}
    V = len(train.vocab)
    torch.manual_seed(0)
    story0 = TopicMixture(V, args.topics)
    guide0 = NormalGuide(V, args.topics, hidden=[args.hidden], activation="tanh")

    # 1. every inference kind of the registry that trains, each a one-line swap on copies of
    #    the same story and guide (refinement steps sized for bags of words: lr 0.05; see
    #    Refinement's docstring)
    fitted, rows = {}, {}
    for spec in [k.format(k=args.steps) for k in KINDS]:
        story, guide = copy.deepcopy(story0), copy.deepcopy(guide0)
        setup = Setup(
            story,
            guide,
            data=splits,
            refinement=Refinement(lr=0.05),
            training=Training(optim_args={"lr": 1e-2}),
        )
        inference = build(spec, setup)
        start = time.perf_counter()
        inference.fit(train, epochs=args.epochs, batch_size=64, progress=False)
        fitted[spec] = inference
        rows[spec] = {"seconds": time.perf_counter() - start}
    # a table of λ (non-amortized VI) serves the documents it was fitted on: it is scored on them
    story, guide = copy.deepcopy(story0), copy.deepcopy(guide0)
    table = NonAmortized(story, guide, len(train), optim_args={"lr": 1e-2})
    start = time.perf_counter()
    table.fit(train, epochs=args.epochs, batch_size=64, progress=False)
    rows["table (train docs)"] = {"seconds": time.perf_counter() - start}
    # test-time refinement of the trained encoder's λ
    fitted["vae, refined"] = refined(fitted["vae"], Refinement(steps=4 * args.steps, lr=0.05))
    rows["vae, refined"] = {"seconds": None}  # refines at test time only

    # 2. one table: the ELBO and the importance-weighted bound of every fit
    for name, inference in [*fitted.items(), ("table (train docs)", table)]:
        scored = train if inference is table else test
        elbo = evaluate(inference, scored, "elbo").summary()
        iw = evaluate(inference, scored, ImportanceWeighted(args.iw_samples)).summary()
        rows[name].update(
            elbo_perplexity=elbo["perplexity"],
            iw_perplexity=iw["perplexity"],
            kl=elbo["kl"],
            au=elbo["active_units"],
        )
    print(f"| inference | perplexity (ELBO) | perplexity (IW, S={args.iw_samples}) | KL | AU | train s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['elbo_perplexity']:.1f} | {r['iw_perplexity']:.1f} | {r['kl']:.2f} | {r['au']} | "
            + ("test time |" if r["seconds"] is None else f"{r['seconds']:.1f} |")
        )

    # 3. NUTS on a few held-out documents, the story fixed at the VAE's fit: its draws score
    #    log p(x) through a proposal fitted to them, beside the VAE's IW bound on the same documents
    vae = fitted["vae"]
    few = test.subset(range(min(args.nuts_docs, len(test))))
    mcmc = MCMC(
        vae.story,
        vae.guide,
        num_samples=args.nuts_draws,
        warmup=args.nuts_draws,
        num_chains=2,
        progress=False,
    )
    torch.manual_seed(0)
    draws = evaluate(mcmc, few, ImportanceFromDraws(10 * args.iw_samples), batch_size=len(few)).summary()
    vae_few = evaluate(vae, few, ImportanceWeighted(args.iw_samples)).summary()
    print(
        f"\nNUTS on {len(few)} held-out documents ({args.nuts_draws} draws x 2 chains): perplexity "
        f"{draws['perplexity']:.1f} from its draws (max k-hat {draws['khat_max']:.2f}) against the VAE's IW "
        f"{vae_few['perplexity']:.1f}"
    )
    if draws["perplexity"] > vae_few["perplexity"]:
        # both are stochastic lower bounds on log p(x): the tighter (lower perplexity) is the better figure
        print(
            "  read: both figures bound log p(x) from below, so the lower perplexity is the closer one; the "
            "proposal fitted to NUTS's draws is the looser here"
            + (
                " (k-hat above 0.7: its weights are unreliable, more draws would help)"
                if draws["khat_max"] > 0.7
                else ""
            )
        )

    # 4. ArviZ: both posteriors of the same documents, with r-hat, ESS and PSIS-LOO
    batch = few.batch(torch.arange(len(few)))
    idata = {"NUTS": to_arviz(mcmc, batch), "VAE q": to_arviz(vae, batch, 2 * args.nuts_draws)}
    summary = az.summary(idata["NUTS"], var_names=["z"])
    print(f"NUTS r-hat max {summary['r_hat'].max():.3f}, bulk ESS min {summary['ess_bulk'].min():.0f}")
    if summary["r_hat"].max() > 1.01 or summary["ess_bulk"].min() < 100 * 2:
        print(
            "  read: r-hat above 1.01 or fewer than 100 effective draws per chain: the chains have not "
            "mixed well enough for reliable posterior summaries; raise --nuts-draws"
        )
    loo, flagged = {}, {}
    for name, d in idata.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its high k-hat warning is read out below
            result = az.loo(d, pointwise=True)
        loo[name], flagged[name] = float(result.elpd_loo), int((result.pareto_k > 0.7).sum())
    print("PSIS-LOO elpd: " + ", ".join(f"{k} {v:.1f}" for k, v in loo.items()))
    if any(flagged.values()):
        # each document has its own latent z: leaving one out removes its whole posterior, so its
        # importance weights are heavy-tailed and PSIS cannot correct them
        print(
            "  read: Pareto k above 0.7 for "
            + ", ".join(f"{n} documents of {k}" for k, n in flagged.items())
            + ": PSIS-LOO is unreliable for them (each document has its own latent, so leaving it out "
            "moves the posterior far); compare the models on held-out perplexity instead"
        )

    # 5. a posterior predictive check with Pyro's Predictive: distinct words per document
    check = test.batch(torch.arange(len(test)))
    with torch.no_grad():
        replicas = Predictive(
            poutine.uncondition(vae.story.model), guide=vae.guide, num_samples=args.replicas
        )(check)
    real, predicted = distinct_words(check.counts), distinct_words(replicas["x"])
    p_value = float((predicted.mean(-1) >= real.mean()).double().mean())
    print(
        f"posterior predictive check: distinct words per document {float(real.mean()):.1f} real, "
        f"{float(predicted.mean()):.1f} predicted (p = {p_value:.2f})"
    )
    if not 0.05 <= p_value <= 0.95:
        more = float(predicted.mean()) > float(real.mean())
        print(
            "  read: the check fails: the story predicts "
            + ("more" if more else "fewer")
            + " distinct words than the documents have"
            + (
                ": real documents repeat their words (burstiness), which words drawn independently from "
                "one mixture of topics do not; a likelihood with repeats (Dirichlet-multinomial) or "
                "sharper topics would"
                if more
                else ": the topics are too concentrated for these documents"
            )
        )
    return {"rows": rows, "nuts": draws, "loo": loo, "ppc": {"real": float(real.mean()), "p": p_value}}


if __name__ == "__main__":
    main()
