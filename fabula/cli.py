"""The ``fabula`` command: train, evaluate and inspect generative stories of text.

The flags of ``train`` and ``compare`` are generated from the settings classes
(:mod:`fabula.run.flags`), each story's with its recipe's defaults; a story is a registered name,
a ``module:Class`` path or a ``fabula.stories`` entry point (:mod:`fabula.run.stories`);
inference kinds and their options come from the registry (:mod:`fabula.inference.kinds`). Only
the library's user-facing errors
(:mod:`fabula.errors`) become a one-line message and exit 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import textwrap
import warnings
from dataclasses import fields
from pathlib import Path

import torch

from fabula.cgmh import CGMHSettings, cgmh
from fabula.data import DOCUMENTS
from fabula.data.text import TextBatch
from fabula.devices import DeviceSettings, cpu_threads, resolve
from fabula.distributed import launch_rank
from fabula.errors import DivergenceError, FabulaError, SettingsError, UsageError
from fabula.evaluation import ImportanceWeighted, default_estimator, evaluate, parse_estimator
from fabula.evaluation.estimators import spec_of
from fabula.evaluation.gaps import NotConverged, inference_gaps
from fabula.evaluation.mixture import mixture_diagnostics
from fabula.evaluation.topic_quality import DIVERSITY_TOP, npmi, topic_diversity
from fabula.generation import DECODERS, decode, homotopy, sample_documents
from fabula.inference import MCMC, Refinement, RefinementWarning, refined
from fabula.inference.kinds import KINDS, Sampling, build, parse, unfit
from fabula.inference.spec import describe
from fabula.models.capabilities import (
    GeneratesDocuments,
    GeneratesSentences,
    HasComponents,
    HasPosteriorMean,
    HasTopics,
)
from fabula.plots import plot_comparison
from fabula.run import (
    TrainConfig,
    data_description,
    fit_reference,
    load_data,
    load_run,
    train,
)
from fabula.run.compare import COMPARE_DEFAULTS, CompareSettings, compare, estimate_seconds
from fabula.run.compare import markdown as compare_markdown
from fabula.run.compare_store import CompareStore
from fabula.run.config import SYNTHETIC, DataSettings, InferenceSettings
from fabula.run.flags import add_arguments, from_arguments, number
from fabula.run.plan import build_story, inspection_setup
from fabula.run.shipped_stories import RSMSettings
from fabula.run.stories import STORIES, recipe, story_names
from fabula.settings import COUNT, NONNEGATIVE, POSITIVE, SEED, Range, from_dict, to_dict

#: The examples every parser's help ends with.
EXAMPLES = """examples:
  fabula train nvdm --out runs/demo                      # synthetic corpus, no download
  fabula train nvdm --data 20news --data-dir ../shared/data --epochs 100 --lr 5e-4 --out runs/nvdm20
  fabula train nvdm --data 20news --data-dir ../shared/data --epochs 120 --lr 5e-4 --out runs/nvdm20 --resume
  fabula train lstm-vae --out runs/oracle                 # the SA-VAE synthetic oracle corpus
  fabula train lstm-vae --data ptb --data-dir ../shared/data --out runs/vae
  fabula train lstm-vae --inference sa-vae:10 --out runs/savae
  fabula train rnnlm --data ptb --data-dir ../shared/data --output class --out runs/lm-class   # output layer
  fabula train rnnlm --data ptb --data-dir ../shared/data --inference seqgan:16,pretrain=4 --out runs/seqgan
  fabula train lstm-vae --device cuda --precision bf16 --out runs/vae-gpu
  torchrun --nproc-per-node 2 -m fabula train nvdm --out runs/ddp   # data-parallel, 2 processes
  fabula train gmvae --data ptb --data-dir ../shared/data --dispersion 0.8 --out runs/dgmvae
  fabula evaluate runs/nvdm20 --estimator iw:500 --json
  fabula evaluate runs/demo --estimator iw:100 --gaps
  fabula topics runs/nvdm20 --k 10
  fabula sample runs/vae --n 5 --decode beam
  fabula sample runs/vae --n 3 --from "the company said it would sell its stake"
  fabula interpolate runs/vae "he said the market was weak" "the stock rose N %" --steps 5
  fabula compare --fixed-story
  fabula diagnose runs/demo --inference nuts --items 0:10 --out diag/nuts
  fabula diagnose runs/demo --inference vae --against-nuts --backend numpyro --items 0:5 --out diag/vae
  fabula cgmh runs/ptb-fwd --backward runs/ptb-bwd --keywords "market fell" --chains 4 --steps 200
"""


POINTS = Range(at_least=2)  #: the points of a homotopy: at least a segment's two ends


def _threads(args) -> None:
    torch.set_num_threads(cpu_threads(args.threads))


def _device(args) -> torch.device:
    """The command's ``--device``, refused in one line where this machine lacks it."""
    return resolve(from_arguments(DeviceSettings, args, "device").device)


def _train_config(args) -> TrainConfig:
    """The settings whose flags were given, on the story's defaults for the kind it trains with
    (:meth:`~fabula.run.TrainConfig.create`: a recipe's KL remedy that the kind does not use is
    left out, a given one refused)."""
    given = {dest.partition(".")[2]: getattr(args, dest) for dest in args.given if "." in dest}
    return TrainConfig.create(args.story, **given)


def cmd_train(args) -> int:
    """``fabula train STORY``: train a story into a run directory (or resume one)."""
    _threads(args)
    config = _train_config(args)
    history = train(config, args.out, resume=args.resume, progress=not args.quiet)
    if launch_rank() != 0:  # under torchrun, rank 0 reports
        return 0
    estimator = recipe(config.story).evaluation  # the per-epoch evaluation's
    for m in history:
        if "eval_perplexity" in m:
            figures = (
                f"{m['eval_split']} ppl ({estimator}) per doc {m['eval_perplexity']:.1f} corpus "
                f"{m['eval_corpus_perplexity']:.1f}"
            )
            if "eval_kl" in m:
                figures += f"  KL {m['eval_kl']:.2f}  MI {m['eval_mi']:.2f}  AU {m['eval_active_units']}"
        else:  # a story without a per-epoch bound: its callbacks' figures
            figures = "  ".join(
                f"{m['eval_split']} {k.removeprefix('eval_')} {v:.3f}"
                for k, v in m.items()
                if k.startswith("eval_") and isinstance(v, float)
            )
        print(f"epoch {m['epoch']:4d}  loss {m['loss']:.2f}  {figures}  {m['train_seconds']:.1f}s")
    print(f"run written to {args.out} (checkpoint.safetensors, metrics.jsonl, curves.png)")
    return 0


def _table(rows: dict[str, dict]) -> str:
    # the figures every row has (no KL without a q), then the estimator's diagnostics (khat, ais_se)
    keys = [
        k
        for k in ["nll", "perplexity", "corpus_perplexity", "kl", "mi", "active_units"]
        if all(k in r for r in rows.values())
    ]
    keys += [
        k
        for k in next(iter(rows.values()))
        if k.endswith(("_mean", "_max")) and all(k in r for r in rows.values())
    ]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _split(run, name: str):
    if name not in run.splits:
        raise UsageError(f"no split {name!r}; the data has {sorted(run.splits)}")
    return run.splits[name]


def cmd_evaluate(args) -> int:
    """``fabula evaluate RUN``: bound the NLL of a run's test data and report its metrics."""
    _threads(args)
    run = load_run(args.run, data_dir=args.data_dir, device=_device(args))
    data = _split(run, args.split)
    estimator = (
        parse_estimator(args.estimator) if args.estimator else default_estimator(run.inference.story, data)
    )
    report = evaluate(run.inference, data, estimator, args.batch_size, progress=not args.json)
    result = {
        **report.summary(),
        "split": args.split,
        "epoch": run.metadata["epoch"],
        "inference": run.inference.spec,
    }
    if run.reference is not None:
        # by the estimator asked for where it scores the generator, else by the generator's own
        # best (a story's exact likelihood, left-to-right or the estimator it chose does not score
        # the generator's latents)
        scored_by = default_estimator(run.reference.story, data)
        if args.estimator:
            try:
                estimator.check(run.reference)
                scored_by = estimator
            except UsageError:
                pass
        result["generator"] = evaluate(run.reference, data, scored_by, args.batch_size).summary()
    if isinstance(run.inference.story, HasComponents):
        result["mixture"] = mixture_diagnostics(run.inference, data, args.batch_size)
    if args.gaps:
        refinement = Refinement(steps=args.gap_steps, lr=args.gap_lr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RefinementWarning)  # restated below in the flag's terms
            try:
                result["gaps"] = inference_gaps(
                    run.inference,
                    refined(run.inference, refinement),
                    data,
                    args.gap_samples,
                    batch_size=args.batch_size,
                )
            except NotConverged as e:
                raise NotConverged(
                    f"refinement did not converge: lower --gap-lr (now {args.gap_lr}); the refined ELBO "
                    f"is {-e.gap:.2f} nats per datum below the amortized one (standard error {e.se:.2f})",
                    e.gap,
                    e.se,
                    args.gap_lr,
                ) from None
            except DivergenceError as e:  # a step left the support of q or the ELBO went non-finite
                raise DivergenceError(
                    f"refinement did not converge: lower --gap-lr (now {args.gap_lr}); {e}"
                ) from None
        g = result["gaps"]
        if g["raised_batches"]:
            print(
                f"fabula evaluate: warning: refinement raised the negative ELBO of {g['raised_batches']} "
                f"of {g['refined_batches']} batches: lower --gap-lr (now {args.gap_lr}) for a closer λ*",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = {"trained": result}
    if run.reference is not None:
        scored_by = result["generator"]["estimator"]
        label = "generating model" + ("" if scored_by == estimator.name else f" ({scored_by})")
        rows[label] = result["generator"]
    print(
        f"{args.run}: {args.split} split, {result['num_data']} data, inference {run.inference.spec}, "
        f"estimator {spec_of(estimator)}; NLL, KL and MI in nats per datum"
    )
    print(_table(rows))
    if "mixture" in result:
        m = result["mixture"]
        used = ", ".join(f"{u:.2f}" for u in m["used"])
        print(
            f"mixture: KL(c) {m['kl_c']:.2f}, KL(z) {m['kl_z']:.2f}, MI(x; c) {m['mi_c']:.2f} nats; "
            f"components in use per latent pair (exp entropy of usage) {used}"
        )
    if args.gaps:
        g = result["gaps"]
        print(
            f"log p(x) (IW, S={g['iw_samples']}, q refined) {g['log_likelihood']:.2f}; approximation gap "
            f"{g['approximation_gap']:.2f}; amortization gap {g['amortization_gap']:.2f} "
            f"± {g['amortization_gap_se']:.2f} (nats per datum)"
        )
    return 0


def _sentence_story(run):
    """The story of a run and its vocabulary, refusing a story that does not generate sentences."""
    story = run.inference.story
    if not isinstance(story, GeneratesSentences):
        raise UsageError(f"the {run.metadata['story']} story does not generate sentences")
    return story, next(iter(run.splits.values())).vocab


def _encode(run, vocab, sentence: str):
    batch = TextBatch.from_ids([vocab.encode(sentence.split())])
    return batch.to(run.inference.story.device)


def _sample_documents(args, run) -> int:
    """Documents from a bag-of-words story's prior, each as long as a random training document."""
    if args.source is not None or args.component is not None or args.decode != "sample":
        raise UsageError(
            f"the {run.metadata['story']} story samples documents from its prior; "
            "--from, --component and --decode apply to sentence stories"
        )
    corpus = _split(run, "train")
    lengths = corpus.lengths[torch.randint(len(corpus), (args.n,))]
    documents = sample_documents(run.inference.story, lengths, args.max_length)
    for length, words in zip(lengths.tolist(), documents, strict=True):
        print(f"{length:.0f} words: " + " ".join(f"{corpus.vocab.words[i]}:{c}" for i, c in words))
    return 0


def cmd_sample(args) -> int:
    """``fabula sample RUN``: draw sentences or documents from a trained story."""
    torch.manual_seed(args.seed)
    run = load_run(args.run, data_dir=args.data_dir, device=_device(args))
    if isinstance(run.inference.story, GeneratesDocuments):
        return _sample_documents(args, run)
    story, vocab = _sentence_story(run)
    if args.source is not None:
        if not story.code_sites:
            raise UsageError("--from needs a story with a latent code (lstm-vae, gmvae)")
        batch = _encode(run, vocab, args.source)
        z = story.code(run.inference.posterior(batch, args.n))[:, 0]
        print("input:  " + " ".join(vocab.decode(batch.targets[0])))
    elif args.component is not None:
        if not isinstance(story, HasComponents):
            raise UsageError("--component needs a mixture story (gmvae)")
        (m, k), (pairs, components) = args.component, story.component_means.shape[:2]
        if m >= pairs or k >= components:
            raise UsageError(
                f"--component {m}:{k}: the story has pairs 0..{pairs - 1}, components 0..{components - 1}"
            )
        z = story.generate_component(m, k, args.n)
    else:
        z = story.code(story.prior_sample(args.n))
    for ids in decode(story.decoder, z, args.n, args.decode, args.beam_size, args.max_length):
        print(" ".join(story.in_order(vocab.decode(ids))))
    return 0


def cmd_interpolate(args) -> int:
    """``fabula interpolate RUN A B``: decode points on the segment between two sentences' codes."""
    run = load_run(args.run, data_dir=args.data_dir, device=_device(args))
    story, vocab = _sentence_story(run)
    guide = run.inference.guide
    if not story.code_sites or not isinstance(guide, HasPosteriorMean):
        raise UsageError("interpolation needs a story with a latent code and a guide with posterior means")
    means = [
        guide.posterior_mean(run.inference.local_params(_encode(run, vocab, s)))[0] for s in (args.a, args.b)
    ]
    z = homotopy(means[0], means[1], args.steps)
    for t, ids in zip(
        torch.linspace(0, 1, args.steps).tolist(),
        decode(story.decoder, z, None, args.decode, args.beam_size, args.max_length),
        strict=True,
    ):
        print(f"{t:.2f}  " + " ".join(vocab.decode(ids)))
    return 0


def _compare_config(args, kinds: tuple[str, ...]) -> TrainConfig:
    """The story, data, sizes and training of a comparison: the run configuration's parts read
    from their flags (at the story's defaults with :data:`~fabula.run.compare.COMPARE_DEFAULTS`),
    fabula's own stories sized by --latent-dim and --hidden-dim, a user's story by its own flags;
    the first compared kind stands for the configuration's own."""
    if args.story == "rnnlm" and not any(parse(spec)[0].adversarial for spec in kinds):
        adversarial = ", ".join(k.name for k in KINDS.values() if k.adversarial)
        raise UsageError(
            f"the rnnlm story has no latent: only kinds that train it against a discriminator ({adversarial}) "
            "differ from maximum likelihood"
        )
    r = recipe(args.story)
    parts = TrainConfig.parts(args.story)
    values = {
        name: to_dict(from_arguments(part, args, name)) for name, part in parts.items() if name != "model"
    }
    values["data"] = {"data": args.data, "data_dir": args.data_dir}
    values["inference"]["inference"] = kinds[0]  # each row is built with its own
    if args.story not in STORIES:
        values["model"] = to_dict(from_arguments(r.settings, args, "model"))
    else:
        latent, hidden = args.latent_dim, args.hidden_dim
        values["model"] = dict(r.defaults.get("model", {}))
        if r.settings is RSMSettings:  # its latents are its hidden units; it has no network
            values["model"]["hidden"] = latent
        elif r.reads == DOCUMENTS:
            values["model"].update(latent_dim=latent, hidden=(hidden,))
        else:  # a sentence story; the rnnlm has no latent to size
            has_latent = "latent_dim" in {f.name for f in fields(r.settings)}
            values["model"].update(
                embed_dim=hidden, hidden_dim=hidden, **({"latent_dim": latent} if has_latent else {})
            )
    return TrainConfig(args.story, **{name: from_dict(part, values[name]) for name, part in parts.items()})


def _held_story(config: TrainConfig, generator, device):
    """With ``--fixed-story``, the story every row keeps fixed: the data's generating model,
    which must be the compared story's kind."""
    if generator is None:
        raise UsageError(
            f"--fixed-story holds the data's generating model, and {config.data.data} has none "
            "(only the embedded synthetic corpora do)"
        )
    kind = recipe(config.story).story
    if not isinstance(generator, kind):
        raise UsageError(
            f"--fixed-story: the data's generating model is a {type(generator).__name__}, "
            f"not the {config.story} story's {kind.__name__}"
        )
    latent = getattr(config.model, "latent_dim", None)
    if latent is not None and latent != generator.latent_dim:
        raise UsageError(
            f"--fixed-story: the generating model's z has {generator.latent_dim} dimensions; "
            f"--latent-dim {latent} differs (give --latent-dim {generator.latent_dim})"
        )
    return generator.to(device)


def cmd_compare(args) -> int:
    """``fabula compare``: train inference kinds over seeds and print one table."""
    _threads(args)
    settings = from_arguments(CompareSettings, args, "compare")
    config = _compare_config(args, settings.inference)
    device = _device(args)
    splits, generator = load_data(data_description(config), None, config.tokenization)
    full_train = splits["train"]
    for name, size in (("train", settings.train_size), ("test", settings.test_size)):
        if size is not None and size < len(splits[name]):
            splits[name] = splits[name].subset(torch.arange(size))
    held = _held_story(config, generator, device) if settings.fixed_story else None

    def build_pair():
        story, guide = build_story(config, full_train)
        return (copy.deepcopy(held) if held is not None else story.to(device)), guide.to(device)

    store = None
    if args.out is not None:
        store = CompareStore.of(args.out, config, settings)
        if store.cells and not args.json:
            print(f"{args.out}: {len(store.cells)} finished cells read back; computing the rest")
    done = store.cells if store is not None else {}
    learn = not settings.fixed_story
    if not args.json:
        estimate = estimate_seconds(config, build_pair, splits, settings, learn, done)
        print("estimated training time: " + ", ".join(f"{spec} {s:.0f} s" for spec, s in estimate.items()))
    finished = store.put if store is not None else None
    try:
        rows = compare(config, build_pair, splits, settings, learn, not args.json, done, finished)
    except KeyboardInterrupt:
        kept = (
            f"{len(store.cells)} finished cells are kept in {store.file}: the same command resumes"
            if store is not None
            else "nothing is kept without --out DIR"
        )
        print(f"fabula compare: stopped; {kept}", file=sys.stderr)
        return 130
    reference = store.reference if store is not None else None
    if generator is not None and reference is None:
        reads, seed = recipe(config.story).reads, config.run.seed
        # its guide fitted on all the training data: a loose guide would put the reference's
        # bound above the rows' and hide an unfitted row
        fitted = fit_reference(generator, reads, full_train, seed, progress=not args.json)
        reference = evaluate(fitted, splits["test"], ImportanceWeighted(settings.samples)).summary()
        if store is not None:
            store.put_reference(reference)
    table = compare_markdown(rows, reference)
    if store is not None:
        store.write_table(table)
        plot_comparison(rows, store.path / store.PLOT, reference)
    if args.json:
        print(json.dumps({"rows": rows, "generator": reference}, indent=2))
    else:
        trained = (
            "the inference only (story fixed at the generating model)"
            if settings.fixed_story
            else "story and inference"
        )
        print(
            f"{args.story} on {args.data} ({len(splits['train'])} training data, {len(splits['test'])} test), "
            f"{config.run.epochs} epochs, {trained}, seeds {config.run.seed}-{config.run.seed + settings.seeds - 1}; "
            "NLL in nats per datum"
        )
        print(table)
        if store is not None:
            print(f"table and plot: {store.path / store.TABLE}, {store.path / store.PLOT}")
    return 0


def cmd_diagnose(args) -> int:
    """``fabula diagnose RUN``: a run's posterior in ArviZ, its summaries and plots."""
    _threads(args)
    from fabula.diagnostics import (
        compact_summary,
        khat_summary,
        plot_diagnostics,
        plotted_coordinates,
        posterior_error,
        psis_khat,
        to_arviz,
    )

    run = load_run(args.run, data_dir=args.data_dir, device=_device(args))
    data = _split(run, args.split)
    index = torch.arange(len(data))[args.items]
    if len(index) == 0:
        raise UsageError(
            f"--items selects none of the {len(data)} data in {args.split} (START must be below it)"
        )
    story = run.inference.story
    batch = data.batch(index, story.device)
    sampling = Sampling(
        num_samples=args.samples, warmup=args.warmup, num_chains=args.chains, backend=args.backend
    )

    setup = inspection_setup(run.config, run.inference, run.splits, sampling, args.refinement_lr)

    def inference_of(spec: str):
        return run.inference if spec == run.inference.spec else build(spec, setup)

    inference = inference_of(args.inference)
    idata = to_arviz(inference, batch, args.samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(str(out / "posterior.nc"))
    reference = None
    if args.against_nuts and not isinstance(inference, MCMC):
        reference = to_arviz(inference_of("nuts"), batch)
        reference.to_netcdf(str(out / "nuts.nc"))
    written = plot_diagnostics(idata, out, reference)
    drawn = [s for s in story.latent_sites if s in idata.posterior]
    continuous = [s for s in drawn if idata.posterior[s].dtype.kind == "f"]
    files = ["summary.csv"]
    print("\n".join(compact_summary(idata, drawn, out / "summary.csv")))
    if not isinstance(inference, MCMC):
        print(khat_summary(psis_khat(inference, batch, args.samples)))
    if reference is not None:
        files += ["nuts.nc", "nuts_summary.csv"]
        compared = [s for s in continuous if s in reference.posterior]
        print("NUTS reference " + "\n".join(compact_summary(reference, compared, out / files[-1])))
        print("error of q against NUTS per datum (mean error in NUTS sd, |log variance ratio|, Gaussian KL):")
        for site in continuous:
            draws, ref = (torch.as_tensor(d.posterior[site].values) for d in (idata, reference))
            error = posterior_error(draws.flatten(0, 1), ref.flatten(0, 1))
            for i, datum in enumerate(index.tolist()):
                print(
                    f"  {site} item {datum}: {error['mean_error'][i]:.3f}  "
                    f"{error['log_var_ratio'][i]:.3f}  {error['kl'][i]:.3f}"
                )
    print(f"plots show {plotted_coordinates(idata.posterior)[2]}")
    print(f"wrote {out / 'posterior.nc'}, {', '.join(files)} and {', '.join(written)}")
    return 0


def cmd_topics(args) -> int:
    """``fabula topics RUN``: the most probable words of each topic, each topic's NPMI coherence
    against a reference split and the topics' diversity."""
    run = load_run(args.run, data_dir=args.data_dir, device=_device(args))
    story = run.inference.story
    if not isinstance(story, HasTopics):
        raise UsageError(f"the {run.metadata['story']} story has no topics")
    reference = _split(run, args.reference)
    words = reference.vocab.words
    if args.k > len(words):
        raise UsageError(f"--k {args.k} exceeds the vocabulary's {len(words)} words")
    npmi_top, diversity_top = min(args.npmi_top, len(words)), min(DIVERSITY_TOP, len(words))
    ids = story.topic_words(max(args.k, npmi_top, diversity_top)).cpu()
    topics = [[words[i] for i in row[: args.k]] for row in ids.tolist()]
    scores = npmi(ids, reference, npmi_top).tolist()
    mean, diversity = sum(scores) / len(scores), topic_diversity(ids, diversity_top)
    if args.json:
        result = {"topics": topics, "npmi": scores, "npmi_mean": mean, "diversity": diversity}
        result.update(reference=args.reference, npmi_top=npmi_top, diversity_top=diversity_top)
        print(json.dumps(result))
        return 0
    for j, (top, score) in enumerate(zip(topics, scores, strict=True)):
        print(f"z[{j}]\t" + " ".join(top) + f"\tNPMI {score:.3f}")
    print(
        f"mean NPMI {mean:.3f} (top {npmi_top} words, document co-occurrence in the {args.reference} split, "
        f"{len(reference)} documents); topic diversity {diversity:.3f} (unique share of the top {diversity_top})"
    )
    return 0


def _items(text: str) -> slice:
    """``--items START:STOP``: either may be left out (from the first, to the last datum)."""
    start, _, stop = text.partition(":")
    try:
        items = slice(int(start or 0), int(stop) if stop else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP with integers, got {text!r}") from None
    if items.start < 0 or (items.stop is not None and items.stop <= items.start):
        raise argparse.ArgumentTypeError(f"expected 0 <= START < STOP, got {text!r}")
    return items


def _component(text: str) -> tuple[int, int]:
    """``--component [M:]K``: pair ``M`` (0 if left out) and component ``K``."""
    pair, _, k = text.rpartition(":")
    try:
        m, k = int(pair or 0), int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [M:]K with integers, got {text!r}") from None
    if m < 0 or k < 0:
        raise argparse.ArgumentTypeError(f"expected M, K >= 0, got {text!r}")
    return m, k


def _inference_help(trains: bool | None = None, story: str | None = None) -> str:
    """The registered kinds, one per paragraph: name, summary and options (``NAME:key=value,...``);
    for a ``story``, only those that can train it, the others named in a last line."""
    lines = [
        "inference kinds (--inference NAME or NAME:key=value,...; a bare first value sets the [leading] option):"
    ]
    unfitting = []
    for k in KINDS.values():
        if story is not None and k.trains and unfit(k, recipe(story).story):
            unfitting.append(k.name)
        elif trains is None or k.trains == trains:
            lines.append(
                textwrap.fill(f"{k.name}: {k.summary}", 100, initial_indent="  ", subsequent_indent="      ")
            )
            options = describe(k.options, k.leading)
            if options:
                lines.append(
                    textwrap.fill(
                        f"options: {options}", 100, initial_indent="      ", subsequent_indent="        "
                    )
                )
    if unfitting:
        lines.append(
            textwrap.fill(
                f"kinds that cannot train the {story} story: {', '.join(unfitting)}",
                100,
                initial_indent="  ",
                subsequent_indent="      ",
            )
        )
    return "\n".join(lines)


def _add_settings(parser, story: str, cls, part: str, defaults: dict | None = None) -> None:
    """The flags of one part of ``story``'s configuration, refusing a user's setting whose flag
    is one of the command's own."""
    try:
        add_arguments(parser, cls, part, defaults)
    except argparse.ArgumentError as e:
        raise SettingsError(
            f"a setting of the {story} story clashes with the command's own flags: {e}"
        ) from None


def _story_named(argv: list[str]) -> str | None:
    """The story a command line names: ``fabula train STORY`` or ``fabula compare --story STORY``."""
    if len(argv) > 1 and argv[0] == "train" and not argv[1].startswith("-"):
        return argv[1]
    story = None
    if argv and argv[0] == "compare":
        for i, word in enumerate(argv):
            if word == "--story" and i + 1 < len(argv):
                story = argv[i + 1]
            elif word.startswith("--story="):
                story = word.partition("=")[2]
    return story


COMPARED_INFERENCE = tuple(f.name for f in fields(InferenceSettings) if f.name != "inference")
"""The inference settings a comparison shares (each row has its own kind)."""
COMPARED_RUN = ("epochs", "batch_size", "seed")
"""The run settings a comparison's training takes."""


def cmd_cgmh(args) -> int:
    """``fabula cgmh RUN``: constrained sentences by Metropolis-Hastings (or its search)."""
    _threads(args)
    settings = from_arguments(CGMHSettings, args, "cgmh")
    records = cgmh(settings, args.run, args.backward, args.data_dir, _device(args), progress=not args.json)
    for r in records:
        print(json.dumps(r) if args.json else r["sentence"])
    return 0


def _train_parser(sub, threads, plugin: str | None) -> None:
    t = sub.add_parser(
        "train",
        help="train a story on a corpus into a run directory",
        description=textwrap.fill(
            "Train a story: a registered name, a module:Class path to your own Story subclass, or an "
            "installed fabula.stories entry point (" + ", ".join(story_names()) + ").",
            100,
        )
        + "\n\n"
        + _inference_help(trains=True),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stories = t.add_subparsers(dest="story", required=True, metavar="STORY", parser_class=_StoryParser)
    for name in [*STORIES, *([plugin] if plugin else [])]:
        r = recipe(name)
        s = stories.add_parser(
            name,
            parents=[threads],
            help=(r.settings.__doc__ or name).strip().splitlines()[0],
            description=f"Train the {name} story.\n\n{_inference_help(trains=True, story=name)}",
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        s.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
        s.add_argument(
            "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
        )
        s.add_argument("--quiet", action="store_true", help="no progress bars")
        for part, cls in TrainConfig.parts(name).items():
            _add_settings(s, name, cls, part, r.defaults.get(part))
        s.set_defaults(func=cmd_train)


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one line, as the library's errors are (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _StoryParser(_Parser):
    """A story's ``train`` parser, which also records the destinations of the flags given
    (``args.given``), so that the story's defaults can follow the inference kind."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        parsed, rest = super().parse_known_args(args, namespace)
        unset = object()  # a namespace holding it gets no defaults: what is left unset was not given
        probe = argparse.Namespace(**{a.dest: unset for a in self._actions})
        probe, _ = super().parse_known_args(args, probe)
        parsed.given = {a.dest for a in self._actions if getattr(probe, a.dest, unset) is not unset}
        return parsed, rest


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command's parser; a story named by path or entry point in ``argv`` gets its flags."""
    named = _story_named(sys.argv[1:] if argv is None else argv)
    plugin = named if named is not None and named not in STORIES else None
    p = _Parser(
        prog="fabula",
        description="Deep generative models of text as Pyro stories, fitted by swappable inference.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument(
        "--threads",
        type=number(int, COUNT),
        help=f"torch CPU threads, {COUNT} (default: FABULA_THREADS, else half the cores)",
    )
    run_data = argparse.ArgumentParser(add_help=False)
    run_data.add_argument("--data-dir", help="where the run's dataset lies now, if it moved")
    device = argparse.ArgumentParser(add_help=False)
    add_arguments(device, DeviceSettings, "device")
    _train_parser(sub, threads, plugin)

    e = sub.add_parser(
        "evaluate",
        parents=[threads, run_data, device],
        help="bound the NLL of a run's test data; report perplexity, KL, active units",
        epilog="example: fabula evaluate runs/demo --estimator iw:500 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("run", help="run directory written by 'fabula train'")
    e.add_argument(
        "--estimator",
        help="elbo[:S]: the variational bound, reconstruction over S draws of q; iw:S: the "
        "importance-weighted bound with S draws; iw-draws:S: importance sampling from a proposal fitted "
        "to the posterior draws, with its k-hat; exact: the likelihood of a story that has one; "
        "ais:RUNS:STEPS: an undirected story's (rsm) by annealed importance sampling along the document "
        "length; ais-beta:RUNS:TEMPERATURES: along the inverse temperature "
        "(default: exact where the story has it, ais for the rsm, else elbo)",
    )
    e.add_argument("--split", default="test", help="data split (default: test)")
    e.add_argument(
        "--batch-size",
        type=number(int, COUNT),
        default=200,
        help=f"data per evaluation batch, {COUNT} (default: 200)",
    )
    e.add_argument(
        "--gaps",
        action="store_true",
        help="also report Cremer et al.'s approximation and amortization gaps (λ* by refining the run's λ)",
    )
    e.add_argument(
        "--gap-steps",
        type=number(int, COUNT),
        default=100,
        help=f"refinement steps for λ*, {COUNT} (default: 100)",
    )
    e.add_argument(
        "--gap-lr",
        type=number(float, POSITIVE),
        default=0.005,
        help=f"refinement step size for λ*, {POSITIVE}; the gaps are refused when refinement lowers the "
        "ELBO (default: 0.005, which converges for every shipped story)",
    )
    e.add_argument(
        "--gap-samples",
        type=number(int, COUNT),
        default=500,
        help=f"IW samples S for log p(x) of the gaps, {COUNT} (default: 500)",
    )
    e.add_argument(
        "--json",
        action="store_true",
        help="print JSON (keys: perplexity, corpus_perplexity, nll, kl, active_units, estimator, samples, ...)",
    )
    e.set_defaults(func=cmd_evaluate)

    k = sub.add_parser(
        "topics",
        parents=[run_data, device],
        help="the top words of each latent dimension of a topic story, their NPMI coherence and diversity",
        description=textwrap.fill(
            "Print each topic's top words and its NPMI coherence (Bouma 2009; Lau et al. 2014): the mean "
            "over pairs of its top words of log(P(wi,wj) / P(wi)P(wj)) / -log P(wi,wj), from the share of "
            "documents of the reference split holding one or both words (-1 for a pair that never shares a "
            "document, 1 for one in every document); then the mean NPMI over topics and the topic diversity "
            f"(Dieng et al. 2020), the share of unique words among all topics' top {DIVERSITY_TOP} words. "
            "Both count at most the vocabulary's words.",
            100,
        ),
        epilog="examples:\n  fabula topics runs/nvdm20 --k 10\n"
        "  fabula topics runs/nvdm20 --reference test --npmi-top 20 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k.add_argument("run", help="run directory")
    k.add_argument(
        "--k", type=number(int, COUNT), default=10, help=f"words per dimension, {COUNT} (default: 10)"
    )
    k.add_argument(
        "--reference",
        default="train",
        help="the split whose documents NPMI counts co-occurrences in (default: train)",
    )
    k.add_argument(
        "--npmi-top",
        type=number(int, Range(at_least=2)),
        default=10,
        help=f"top words per topic scored by NPMI, {Range(at_least=2)} (default: 10)",
    )
    k.add_argument(
        "--json",
        action="store_true",
        help="print JSON (keys: topics, npmi, npmi_mean, diversity, reference, npmi_top, diversity_top)",
    )
    k.set_defaults(func=cmd_topics)

    decoding = argparse.ArgumentParser(add_help=False)
    decoding.add_argument(
        "--beam-size",
        type=number(int, COUNT),
        default=5,
        help=f"hypotheses of --decode beam, {COUNT} (default: 5)",
    )
    decoding.add_argument(
        "--max-length",
        type=number(int, COUNT),
        default=50,
        help=f"words of a sentence at most (of a document: most frequent words shown), {COUNT} (default: 50)",
    )
    sm = sub.add_parser(
        "sample",
        parents=[run_data, decoding, device],
        help="generate sentences from a sentence story (prior, or q(z|x) of a sentence), or documents "
        "from a bag-of-words story's prior",
        epilog="examples:\n  fabula sample runs/vae --n 5 --decode beam\n"
        '  fabula sample runs/vae --n 3 --from "the company said it would sell its stake"\n'
        "  fabula sample runs/nvdm20 --n 3 --max-length 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sm.add_argument("run", help="run directory of an nvdm, rnnlm, lstm-vae or gmvae")
    sm.add_argument(
        "--n",
        type=number(int, COUNT),
        default=10,
        help=f"sentences or documents to generate, {COUNT} (default: 10)",
    )
    sm.add_argument("--from", dest="source", help="encode this sentence and decode draws of z from q(z|x)")
    sm.add_argument(
        "--component",
        type=_component,
        help="gmvae: draw pair M's z from component K ([M:]K; the other pairs from the prior)",
    )
    sm.add_argument("--decode", default="sample", choices=DECODERS, help="decoding (default: sample)")
    sm.add_argument("--seed", type=number(int, SEED), default=0, help=f"random seed, {SEED} (default: 0)")
    sm.set_defaults(func=cmd_sample)

    ip = sub.add_parser(
        "interpolate",
        parents=[run_data, decoding, device],
        help="decode the homotopy between two sentences' posterior means",
        epilog='example: fabula interpolate runs/vae "he said the market was weak" "the stock rose N %" --steps 5',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ip.add_argument("run", help="run directory of an lstm-vae or gmvae")
    ip.add_argument("a", help="first sentence")
    ip.add_argument("b", help="second sentence")
    ip.add_argument(
        "--steps",
        type=number(int, POINTS),
        default=5,
        help=f"points on the segment, ends included, {POINTS} (default: 5)",
    )
    ip.add_argument("--decode", default="greedy", choices=DECODERS, help="decoding (default: greedy)")
    ip.set_defaults(func=cmd_interpolate)

    c = sub.add_parser(
        "compare",
        parents=[threads, device],
        help="fit one story with several inference kinds on the same data and seed; one table",
        description=_inference_help(trains=True),
        epilog="examples:\n  fabula compare --fixed-story\n"
        "  fabula compare --inference vae svi:20 vae+svi:20 sa-vae:20 --epochs 10 --train-size 5000 --anneal linear:500 --out cmp/larger\n"
        "  fabula compare --story my_stories:TopicMixture --data corpus/ --inference vae svi:steps=5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "--story",
        default="lstm-vae",
        help="a registered story but rnnlm ("
        + ", ".join(s for s in story_names() if s != "rnnlm")
        + "), or a module:Class path to your own (default: lstm-vae)",
    )
    data = {f.name: f for f in fields(DataSettings)}
    c.add_argument(
        "--data", default=SYNTHETIC, help=data["data"].metadata["help"] + f" (default: {SYNTHETIC})"
    )
    c.add_argument("--data-dir", help=data["data_dir"].metadata["help"])
    if plugin:  # a user's story is sized by its own flags
        _add_settings(c, plugin, recipe(plugin).settings, "model")
    else:
        c.add_argument(
            "--latent-dim",
            type=number(int, COUNT),
            default=2,
            help=f"size of z (the rsm: its hidden units), {COUNT} (default: 2, the oracle's)",
        )
        c.add_argument(
            "--hidden-dim",
            type=number(int, COUNT),
            default=100,
            help=f"network sizes, {COUNT} (default: 100)",
        )
    c.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    c.add_argument(
        "--out",
        help="a folder for the finished cells, the table and its plot: run the same command with "
        "it again to resume a stopped comparison (default: none, nothing kept)",
    )
    add_arguments(c, CompareSettings, "compare")
    story = named or "lstm-vae"
    defaults = recipe(story).defaults
    for name, cls in TrainConfig.parts(story).items():
        if name in ("data", "model"):
            continue
        within = {"inference": COMPARED_INFERENCE, "run": COMPARED_RUN}.get(name)
        add_arguments(c, cls, name, {**defaults.get(name, {}), **COMPARE_DEFAULTS.get(name, {})}, only=within)
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser(
        "diagnose",
        parents=[threads, run_data, device],
        help="a posterior of a run's data in ArviZ: NetCDF, summary (r_hat, ESS), PSIS k-hat, plots",
        description="The run's own kind is the trained object; any other is built over the run's story "
        "and guide.\n\n" + _inference_help(),
        epilog="examples:\n  fabula diagnose runs/demo --inference nuts --items 0:10 --out diag/nuts\n"
        "  fabula diagnose runs/demo --inference vae --against-nuts --backend numpyro --items 0:5 --out diag/vae",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("run", help="run directory")
    d.add_argument("--inference", default="nuts", help="an inference spec (the kinds above; default: nuts)")
    d.add_argument(
        "--items",
        type=_items,
        default="0:10",
        help="data to diagnose, START:STOP (0 <= START < STOP; either may be left out; default: 0:10)",
    )
    d.add_argument("--out", required=True, help="folder for posterior.nc, the summary tables and the plots")
    d.add_argument("--split", default="test", help="data split (default: test)")
    d.add_argument(
        "--samples",
        type=number(int, COUNT),
        default=500,
        help=f"draws, {COUNT} (per chain for nuts; default: 500)",
    )
    d.add_argument(
        "--warmup",
        type=number(int, NONNEGATIVE),
        default=500,
        help=f"nuts warm-up steps, {NONNEGATIVE} (default: 500)",
    )
    d.add_argument("--chains", type=number(int, COUNT), default=2, help=f"nuts chains, {COUNT} (default: 2)")
    d.add_argument(
        "--backend",
        default="pyro",
        choices=MCMC.BACKENDS,
        help="nuts: Pyro on the story, or NumPyro with chains per datum (default: pyro)",
    )
    d.add_argument(
        "--against-nuts",
        action="store_true",
        help="also run NUTS and report q's error against it, with density overlays",
    )
    d.add_argument(
        "--refinement-lr",
        type=number(float, POSITIVE),
        help=f"step size of refinement kinds, {POSITIVE} (default: the run's --refinement-lr)",
    )
    d.set_defaults(func=cmd_diagnose)

    cg = sub.add_parser(
        "cgmh",
        parents=[threads, run_data, device],
        help="constrained sentences (keywords, paraphrase) by exact Metropolis-Hastings over word edits (CGMH)",
        epilog='examples:\n  fabula cgmh runs/ptb-fwd --backward runs/ptb-bwd --keywords "market fell" --chains 4 --steps 200\n'
        '  fabula cgmh runs/quora-fwd --paraphrase "how can i learn to cook" --search --json',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cg.add_argument("run", help="run directory of a forward rnnlm")
    cg.add_argument(
        "--backward", help="run directory of an rnnlm trained --reverse (candidate words from both)"
    )
    cg.add_argument(
        "--json", action="store_true", help="one JSON object per chain (per keyword set with --search)"
    )
    add_arguments(cg, CGMHSettings, "cgmh")
    cg.set_defaults(func=cmd_cgmh)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``fabula`` command on ``argv`` (the process's arguments by default); the exit status."""
    words = sys.argv[1:] if argv is None else argv
    try:
        command = parser(words)
    except FabulaError as e:  # a story named by path or entry point that cannot be loaded
        print(f"fabula {words[0]}: error: {e}", file=sys.stderr)
        return 2
    args = command.parse_args(words)
    try:
        return args.func(args)
    except FabulaError as e:
        print(f"fabula {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
