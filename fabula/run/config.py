"""A run's configuration, defined once and nested by the part it configures (data, tokenization,
story, inference, optimizer, run), saved in its checkpoint and validated by the constructors it
feeds. The command's flags are generated from it (:mod:`fabula.run.flags`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from pyro.infer import TraceEnum_ELBO

from fabula.data import DOCUMENTS, SENTENCES, Tokenization
from fabula.data.registry import DATASETS
from fabula.devices import PRECISIONS, DeviceSettings
from fabula.errors import SettingsError
from fabula.inference.annealing import FORMS, parse_schedule
from fabula.inference.kinds import KINDS, parse, trainable, unfit
from fabula.inference.trainer import OptimizerSettings
from fabula.run.stories import recipe
from fabula.settings import (
    COUNT,
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    SEED,
    check_ranges,
    default_of,
    from_dict,
    setting,
    to_dict,
)

#: The data name of the synthetic corpora (no download).
SYNTHETIC = "synthetic"
READS = {"nvdm": DOCUMENTS, "lines": SENTENCES, "dialogues": SENTENCES}
"""The data a registered dataset's format gives."""


@dataclass
class DataSettings:
    """Data: the corpus and where its local copy lies"""

    data: str = setting(
        SYNTHETIC,
        "'synthetic' (no download: sampled from a fixed random NVDM for bag-of-words stories, from the "
        "SA-VAE LSTM oracle for sentence stories), a registered dataset ("
        + ", ".join(sorted(DATASETS))
        + "), or a folder or file of your own (train.txt and test.txt, optionally valid.txt or dev.txt: one "
        "sentence, or one document, per line; or .jsonl with a text field; or NVDM's .feat with vocab.new)",
    )
    data_dir: str | None = setting(
        None, "folder with local copies of a registered dataset (else it is downloaded and cached)"
    )

    def __post_init__(self):
        if self.data != SYNTHETIC and self.data not in DATASETS and not Path(self.data).exists():
            raise SettingsError(
                f"--data {self.data!r} is neither a registered dataset ({', '.join(sorted([SYNTHETIC, *DATASETS]))}) "
                "nor a folder or file that exists"
            )
        if self.data_dir is not None and self.data not in DATASETS:
            raise SettingsError(
                "--data-dir locates a registered dataset; give your own files' path as --data"
            )

    @property
    def own(self) -> bool:
        """Whether the data are the user's own files."""
        return self.data != SYNTHETIC and self.data not in DATASETS


@dataclass
class RunSettings(DeviceSettings):
    """Run: length, batch size, seed, device and precision"""

    epochs: int = setting(30, "total epochs", within=COUNT)
    batch_size: int = setting(64, "data per step (per process under torchrun)", within=COUNT)
    seed: int = setting(0, "random seed", within=SEED)
    precision: str = setting(
        "fp32",
        "training steps in float32, TF32 tensor-core matmuls (CUDA) or bfloat16 autocast; evaluation "
        "stays in float32",
        choices=list(PRECISIONS),
    )
    validate: bool = setting(False, "keep Pyro's argument and shape checks on while training (slower)")
    reference: bool = setting(
        True,
        "synthetic data: fit a guide for the generating story, to bound its NLL beside the trained model's",
    )

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self)


@dataclass
class InferenceSettings:
    """Inference: the kind (a spec of the registry, with its options), its objective's options and remedies for collapse"""

    inference: str = setting("vae", "inference kind, NAME or NAME:OPTIONS (see the kinds above)")
    elbo: str = setting(
        "meanfield",
        "the mean-field ELBO with analytic KL (MeanFieldELBO) or Trace_ELBO",
        choices=["meanfield", "trace"],
    )
    anneal: str | None = setting(
        None, f"KL annealing: {FORMS} (a story's default holds for the kinds whose loss has a KL)"
    )
    free_bits: float | None = setting(
        None,
        "free bits per latent coordinate (nats; a story's default holds for the kinds whose loss has a KL)",
        within=NONNEGATIVE,
    )
    word_dropout: float = setting(
        0.0, "sentence stories: replace decoder input words by <unk> at this rate", within=PROBABILITY
    )
    refinement_lr: float = setting(
        0.1, "step size of the K refinement steps (a kind's lr option overrides it)", within=POSITIVE
    )

    def __post_init__(self):
        check_ranges(self)
        parse(self.inference)
        if self.anneal:
            parse_schedule(self.anneal)

    def training(self) -> dict:
        """The annealing and word-dropout settings of :class:`~fabula.inference.VariationalInference`."""
        out = {"annealing": parse_schedule(self.anneal) if self.anneal else None}
        if self.word_dropout:
            out["word_dropout"] = self.word_dropout
        return out


#: The fields of :class:`InferenceSettings` by name.
INFERENCE_FIELDS = {f.name: f for f in fields(InferenceSettings)}

KL_REMEDIES = ("anneal", "free_bits")
"""The inference settings that act on the ELBO's KL: a recipe's defaults for them hold for the
kinds whose loss has one, and are left out for the others (rws, wake-sleep, nvil, cd, pcd)."""


def recipe_defaults(story: str, inference: str | None = None) -> dict:
    """``story``'s recipe defaults (``{part: {field: value}}``) for a run of kind ``inference``
    (``None``: the recipe's own kind), its KL remedies left out where that kind's loss has no KL."""
    defaults = {part: dict(values) for part, values in recipe(story).defaults.items()}
    own = defaults.get("inference", {})
    kind, _ = parse(inference or own.get("inference", default_of(INFERENCE_FIELDS["inference"])))
    if not kind.kl:
        for name in KL_REMEDIES:
            own.pop(name, None)
    return defaults


def _spec_form(kind) -> str:
    return f"{kind.name}:{kind.leading.upper()}" if kind.leading else kind.name


def kind_refusal(story: str, spec: str) -> str | None:
    """Why the kind of ``spec`` cannot train ``story`` (its class, its data), naming the kinds
    that can; ``None`` where it can."""
    kind, _ = parse(spec)
    cls = recipe(story).story
    reason = unfit(kind, cls)
    if reason is None:
        return None
    fitting = [_spec_form(k) for k in KINDS.values() if k.trains and unfit(k, cls) is None]
    listed = ", ".join(fitting[:-1]) + " or " + fitting[-1] if len(fitting) > 1 else "".join(fitting)
    return f"{reason}: train it with {listed or 'no registered kind'}, not {spec!r}"


def objective_of(story: str, model, inference: InferenceSettings, guide=None):
    """The training objective of ``story``'s recipe for these settings, or ``None`` for a kind
    that brings its own loss (wake-sleep, rws, nvil), which refuses the objective's flags."""
    kind, _ = parse(inference.inference)
    if kind.own_objective:
        if inference.free_bits is not None:
            raise SettingsError(f"--free-bits floors a KL; {kind.name} brings its own loss (give none)")
        if inference.anneal:
            raise SettingsError(f"--anneal scales a KL; {kind.name} brings its own loss (give none)")
        return None
    return recipe(story).objective(model, inference, guide)


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved in its checkpoint): the story and one
    settings object per part it configures (``model`` holds the story's own settings)."""

    story: str
    data: DataSettings
    tokenization: Tokenization
    model: object
    inference: InferenceSettings
    optimizer: OptimizerSettings
    run: RunSettings

    def __post_init__(self):
        r = recipe(self.story)
        holds = READS[DATASETS[self.data.data].format] if self.data.data in DATASETS else r.reads
        if holds != r.reads:
            raise SettingsError(f"the {self.story} story reads {r.reads}; {self.data.data!r} holds {holds}")
        if not self.data.own and self.tokenization != Tokenization():
            raise SettingsError("the tokenization flags apply to your own files (--data PATH)")
        trainable(self.inference.inference)
        refusal = kind_refusal(self.story, self.inference.inference)
        if refusal:  # before any setting that the kind would refuse
            raise SettingsError(refusal)
        if self.inference.word_dropout and r.reads != SENTENCES:
            raise SettingsError("--word-dropout applies to sentence stories")
        objective = objective_of(self.story, self.model, self.inference)
        if self.run.precision == "bf16" and isinstance(objective, TraceEnum_ELBO):
            raise SettingsError(
                f"the {self.story} story's bound sums its discrete latents out (TraceEnum_ELBO), whose "
                "contractions take one dtype, not autocast's mixed bfloat16 and float32; train it in fp32 or tf32"
            )

    @staticmethod
    def parts(story: str) -> dict[str, type]:
        """The settings class of each part of a ``story`` run, in the saved order."""
        return {
            "data": DataSettings,
            "tokenization": Tokenization,
            "model": recipe(story).settings,
            "inference": InferenceSettings,
            "optimizer": OptimizerSettings,
            "run": RunSettings,
        }

    @classmethod
    def create(cls, story: str, **settings) -> TrainConfig:
        """The configuration of ``story`` at its recipe's defaults for the kind it trains with
        (:func:`recipe_defaults`), with ``settings`` given by field name (each name belongs to
        one part: ``epochs``, ``latent_dim``, ``lr``, ...).

        >>> from fabula.run import TrainConfig
        >>> config = TrainConfig.create("nvdm", epochs=2, latent_dim=8)
        >>> config.run.epochs, config.model.latent_dim, config.inference.inference, config.data.data
        (2, 8, 'vae', 'synthetic')
        >>> TrainConfig.from_dict(config.to_dict()) == config  # as a checkpoint saves and reads it
        True
        >>> remedies = TrainConfig.create("lstm-vae").inference  # the recipe's defaults for sentences
        >>> remedies.anneal, remedies.free_bits
        ('linear:8000', 0.2)
        >>> TrainConfig.create("nvdm", epoch=2)
        Traceback (most recent call last):
            ...
        fabula.errors.SettingsError: unknown setting 'epoch' for the nvdm story
        """
        parts = cls.parts(story)
        defaults = recipe_defaults(story, settings.get("inference"))
        values = {name: dict(defaults.get(name, {})) for name in parts}
        owner = {f.name: name for name, part in parts.items() for f in fields(part)}
        for key, value in settings.items():
            if key not in owner:
                raise SettingsError(f"unknown setting {key!r} for the {story} story")
            values[owner[key]][key] = value
        return cls(story, **{name: from_dict(part, values[name]) for name, part in parts.items()})

    def to_dict(self) -> dict:
        return {
            "story": self.story,
            **{name: to_dict(getattr(self, name)) for name in self.parts(self.story)},
        }

    OPTIONAL_PARTS = ("tokenization",)
    """Parts that runs written before them lack (read at their defaults)."""

    @classmethod
    def from_dict(cls, saved: dict) -> TrainConfig:
        parts = cls.parts(saved["story"])
        missing = sorted(set(parts) - set(saved) - set(cls.OPTIONAL_PARTS))
        if missing:
            raise SettingsError(f"the saved configuration lacks {missing} (written by an older fabula?)")
        return cls(
            saved["story"], **{name: from_dict(part, saved.get(name, {})) for name, part in parts.items()}
        )
