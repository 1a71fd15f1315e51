"""The spec grammar and the registry: every option of every registered kind reaches the object
it builds from a spec string, and bad specs are refused in one line."""

import dataclasses
import re
import typing

import pytest
import torch

from fabula.data import synthetic_nvdm_corpus
from fabula.errors import SettingsError
from fabula.guides import BernoulliGuide, EmptyGuide, LogisticNormalGuide, NormalGuide
from fabula.inference import MCMC, Refinement, Sampling, Setup, build
from fabula.inference.kernels import NumPyroNUTS
from fabula.inference.kinds import KINDS, parse
from fabula.inference.spec import write
from fabula.models import LDA, NVDM, RNNLM, ReplicatedSoftmax, SigmoidBeliefNet
from fabula.settings import base_type, default_of

V = 20


@pytest.fixture(scope="module")
def splits():
    corpus = synthetic_nvdm_corpus(num_train=16, num_test=8, vocab_size=V, latent_dim=2, mean_length=10)[0]
    return {**corpus, "valid": corpus["test"]}


def setup_for(name: str, splits) -> Setup:
    """A setup of a story each kind applies to: the SBN for kinds over binary latents, the RSM
    for contrastive divergence, LDA for the kinds that need its form, NVDM otherwise."""
    if name in ("nvil", "rws", "wake-sleep", "gibbs"):
        story, guide = SigmoidBeliefNet(V, 3), BernoulliGuide(V, 3)
    elif name in ("cd", "pcd"):
        story, guide = ReplicatedSoftmax(V, 3), EmptyGuide()
    elif KINDS[name].adversarial:
        story, guide = RNNLM(V, 4, 4), EmptyGuide()
    elif name in ("collapsed-gibbs", "vb", "topic-gibbs"):
        story, guide = LDA(V, 3), LogisticNormalGuide(V, 3, hidden=[4])
    else:
        story, guide = NVDM(V, 2), NormalGuide(V, 2, hidden=[4])
    return Setup(
        story, guide, data=splits, refinement=Refinement(lr=0.1), sampling=Sampling(num_samples=3, warmup=1)
    )


def other_value(options: type, field: dataclasses.Field):
    """A valid value of ``field`` other than its default."""
    kind, _, many = base_type(typing.get_type_hints(options)[field.name])
    default, choices = default_of(field), field.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != default)
    if many:
        return (7, 3)
    if kind is bool:
        return not default
    if kind is int:
        return (default or 1) + 2
    within = field.metadata["within"]
    if within.at_most is not None or within.below is not None:  # a share: halve the distance to 0
        return 0.25 if default != 0.25 else 0.5
    return 0.37 if default is None else default * 3 + 0.01


def reached(inference, name: str, option: str):
    """Where option ``option`` of kind ``name`` lands in the object built."""
    refinement = ("steps", "lr", "momentum", "clip_norm", "hvp", "epsilon")
    if name in ("svi", "vae+svi", "sa-vae", "sa-vae-fd", "refine") and option in refinement:
        return getattr(inference.source.refinement, option)
    sampler = {"samples": "num_samples", "warmup": "warmup", "chains": "num_chains"}
    if name in ("nuts", "gibbs", "topic-gibbs") and option in sampler:
        return getattr(inference, sampler[option])
    where = {
        ("svi", "init_scale"): lambda i: i.source.start.init_scale,
        ("vae+svi", "variant"): lambda i: i.updates.variant,
        ("aggressive", "inner"): lambda i: i.updates.inner_steps,
        ("aggressive", "patience"): lambda i: i.updates.patience,
        ("nuts", "target_accept"): lambda i: i.kernel.target_accept,
        ("nuts", "max_tree_depth"): lambda i: i.kernel.max_tree_depth,
        ("nuts", "backend"): lambda i: "numpyro" if isinstance(i.kernel, NumPyroNUTS) else "pyro",
        ("rws", "k"): lambda i: i.objective.num_particles,
        ("collapsed-gibbs", "sweeps"): lambda i: i.sweeps,
        ("vb", "kappa"): lambda i: i.kappa,
        ("vb", "tau0"): lambda i: i.tau0,
        ("vb", "iterations"): lambda i: i.source.iterations,
        ("vb", "tolerance"): lambda i: i.source.tolerance,
        ("rws", "insomnia"): lambda i: i.objective.insomnia,
        ("nvil", "hidden"): lambda i: tuple(
            m.out_features for m in i.objective.baseline.mlp if isinstance(m, torch.nn.Linear)
        )[:-1],
        ("nvil", "scale"): lambda i: i.objective.baseline.scale,
        ("nvil", "decay"): lambda i: i.objective.decay,
        ("cd", "k"): lambda i: i.k,
        ("pcd", "k"): lambda i: i.k,
    }
    for kind in ("seqgan", "gumbel-gan"):
        where[kind, "critic_dim"] = lambda i: i.updates.critic.lstm.hidden_size
        for policy in ("pretrain", "critic_steps", "max_length", "fixed"):
            where[kind, policy] = lambda i, policy=policy: getattr(i.updates, policy)
        for loss in ("rollouts", "decay", "tau", "tau_min", "rate", "hard"):
            where[kind, loss] = lambda i, loss=loss: getattr(i.updates.generator_loss, loss)
    return where[name, option](inference)


OPTIONS = [(name, f.name) for name, kind in KINDS.items() for f in dataclasses.fields(kind.options)]


def test_every_shipped_kind_is_walked():
    assert {name for name, _ in OPTIONS} == {
        k for k, kind in KINDS.items() if dataclasses.fields(kind.options)
    }
    assert len(OPTIONS) >= 30


@pytest.mark.parametrize("name,option", OPTIONS, ids=[f"{n}:{o}" for n, o in OPTIONS])
def test_each_option_of_each_kind_reaches_the_object_built_from_a_spec(name, option, splits):
    kind = KINDS[name]
    field = {f.name: f for f in dataclasses.fields(kind.options)}[option]
    value = other_value(kind.options, field)
    spec = f"{name}:{option}={write(value)}"
    inference = build(spec, setup_for(name, splits))
    assert inference.spec == spec
    assert reached(inference, name, option) == value
    if kind.leading == option:  # the bare leading value means the same
        assert reached(build(f"{name}:{write(value)}", setup_for(name, splits)), name, option) == value


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if not dataclasses.fields(k.options)])
def test_kinds_without_options_build_from_their_name_and_refuse_any(name, splits):
    assert build(name, setup_for(name, splits)).spec == name
    with pytest.raises(SettingsError, match="has no option 'k'"):
        parse(f"{name}:k=2")


def test_bare_specs_of_earlier_runs_stay_valid(splits):
    assert parse("rws:5")[1].k == parse("rws:k=5")[1].k == 5
    assert parse("svi:20")[1].steps == 20 and parse("cd:1")[1].k == 1
    inference = build("svi:steps=3,lr=0.5,clip_norm=none", setup_for("svi", splits))
    refinement = inference.source.refinement
    assert (refinement.steps, refinement.lr, refinement.clip_norm) == (3, 0.5, None)
    assert build("svi:3", setup_for("svi", splits)).source.refinement.lr == 0.1  # the setup's


@pytest.mark.parametrize(
    "spec,message",
    [
        ("nope", "unknown inference 'nope'"),
        ("rws:", "nothing after ':'"),
        ("rws:k=0", r"k \(draws of q per datum\) must be an integer >= 1, got 0"),
        ("svi:0", r"steps \(refinement steps K\) must be an integer >= 1"),
        ("cd:x", r"option k \(Gibbs steps\): expected an integer, got 'x'"),
        ("rws:k=two", "option k .*: expected an integer, got 'two'"),
        ("rws:insomnia=1.5", r"insomnia .* must be a finite number in \[0, 1\], got 1.5"),
        ("rws:5,8", "only the first option may be given without its name"),
        ("rws:5,k=5", "option 'k' given twice"),
        ("rws:k=5,k=6", "option 'k' given twice"),
        ("svi:lr=nan", "expected a finite number"),
        ("nvil:hidden=100/x", "expected an integer, got 'x'"),
        ("nvil:3", "takes no bare value"),
        ("sa-vae:hvp=fast", "option hvp must be one of exact, finite-difference"),
        ("nuts:backend=stan", "option backend must be one of pyro, numpyro"),
        ("aggressive:speed=2", r"has no option 'speed' \(its options: inner, patience\)"),
        ("svi:steps=", "is not key=value"),
    ],
)
def test_bad_specs_are_refused_in_one_line_naming_the_spec(spec, message):
    with pytest.raises(SettingsError, match=message) as refused:
        parse(spec)
    assert "\n" not in str(refused.value) and repr(spec) in str(refused.value)


def test_a_sampler_option_overrides_the_commands_and_the_rest_keep_theirs(splits):
    nuts = build("nuts:chains=3", setup_for("nuts", splits))
    assert isinstance(nuts, MCMC) and (nuts.num_chains, nuts.num_samples, nuts.warmup) == (3, 3, 1)


def test_train_help_lists_every_kind_that_trains_with_its_options(capsys):
    from fabula.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for kind in KINDS.values():
        listed = (
            re.search(rf"(?<![\w-]){re.escape(kind.name)}: ", shown) is not None
        )  # not collapsed-gibbs for gibbs
        assert listed == kind.trains, kind.name
        for field in dataclasses.fields(kind.options) if kind.trains else ():
            assert f"{field.name} (" in shown, (kind.name, field.name)
    assert "insomnia (share of the encoder's update from wake-phi" in shown


def test_a_table_of_lambda_is_trained_and_scored_on_the_data_it_holds(tmp_path):
    from fabula.errors import UsageError
    from fabula.evaluation import evaluate
    from fabula.run import TrainConfig, load_run, train

    config = TrainConfig.create(
        "nvdm", inference="table", epochs=1, latent_dim=2, hidden=(8,), reference=False
    )
    history = train(config, tmp_path / "run", progress=False)
    assert history[0]["eval_split"] == "train" and history[0]["eval_nll"] > 0
    run = load_run(tmp_path / "run")
    with pytest.raises(UsageError, match="a table of λ holds the data it was trained on"):
        evaluate(run.inference, run.splits["test"], "elbo")
