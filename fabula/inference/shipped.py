"""The inference kinds fabula ships, each registered with its options (:mod:`fabula.inference.kinds`);
every documented option of the objects they build is an option of the spec."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fabula.data import DOCUMENTS
from fabula.errors import SettingsError
from fabula.inference.adversarial import (
    Adversarial,
    AdversarialTraining,
    GumbelSoftmax,
    Reinforce,
    SentenceGenerator,
)
from fabula.inference.collapsed_gibbs import CollapsedGibbs, TopicGibbs
from fabula.inference.contrastive import contrastive
from fabula.inference.kernels import DiscreteGibbs
from fabula.inference.kinds import InferenceKind, Sampling, Setup, register
from fabula.inference.mcmc import MCMC
from fabula.inference.nvil import NVIL
from fabula.inference.presets import (
    Amortized,
    AmortizedSVI,
    NonAmortized,
    SemiAmortized,
    StochasticVI,
    refined,
)
from fabula.inference.refinement import Refinement
from fabula.inference.updates import Aggressive, StoryThenGuide
from fabula.inference.variational_bayes import VariationalBayes
from fabula.inference.wake_sleep import ReweightedWakeSleep, WakeSleep
from fabula.models.capabilities import DirichletTopics, Dreams, GeneratesSentences
from fabula.nn.discriminator import SentenceDiscriminator
from fabula.settings import COUNT, NONNEGATIVE, POSITIVE, PROBABILITY, Range, check_options, setting

#: The open unit interval (0, 1).
UNIT_OPEN = Range(above=0, below=1)


@dataclass(frozen=True)
class RefinementOptions:
    """K gradient steps on each datum's λ (:class:`~fabula.inference.Refinement`)"""

    steps: int = setting(20, "refinement steps K", within=COUNT)
    lr: float | None = setting(None, "step size", within=POSITIVE, unset="the run's --refinement-lr")
    momentum: float = setting(0.5, "momentum", within=Range(at_least=0, below=1))
    clip_norm: float | None = setting(
        5.0, "per-datum gradient norm clip (none: no clipping)", within=POSITIVE
    )

    def __post_init__(self):
        check_options(self)

    def refinement(self, setup: Setup, **extra) -> Refinement:
        """The setup's refinement with these options (its step size where none is given)."""
        lr = {"lr": self.lr} if self.lr is not None else {}
        return replace(
            setup.refinement,
            steps=self.steps,
            momentum=self.momentum,
            clip_norm=self.clip_norm,
            **lr,
            **extra,
        )


@dataclass(frozen=True)
class SVIOptions(RefinementOptions):
    """Per-instance SVI's refinement from the prior"""

    init_scale: float = setting(0.0, "noise added to the prior's λ at the start", within=NONNEGATIVE)


@dataclass(frozen=True)
class AmortizedSVIOptions(RefinementOptions):
    """VAE+SVI's refinement and its encoder's target"""

    variant: str = setting(
        "krishnan",
        "the encoder's loss: its own ELBO (krishnan) or the distance to the refined λ (hjelm)",
        choices=list(StoryThenGuide.VARIANTS),
    )


@dataclass(frozen=True)
class FiniteDifferenceOptions(RefinementOptions):
    """SA-VAE's refinement with finite-difference Hessian-vector products"""

    epsilon: float = setting(1e-5, "finite-difference step of the Hessian-vector products", within=POSITIVE)


@dataclass(frozen=True)
class SemiAmortizedOptions(FiniteDifferenceOptions):
    """SA-VAE's refinement, differentiated through"""

    hvp: str = setting(
        "exact", "Hessian-vector products: exact or finite-difference", choices=["exact", "finite-difference"]
    )


@dataclass(frozen=True)
class AggressiveOptions:
    """He et al.'s aggressive encoder training"""

    inner: int = setting(100, "encoder steps at most per story step while aggressive", within=COUNT)
    patience: int = setting(15, "inner steps whose summed loss must fall to go on", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class ChainOptions:
    """MCMC chains over the local latents"""

    samples: int | None = setting(None, "draws per chain", within=COUNT, unset="the command's --samples")
    warmup: int | None = setting(None, "warm-up steps", within=NONNEGATIVE, unset="the command's --warmup")
    chains: int | None = setting(None, "chains", within=COUNT, unset="the command's --chains")

    def __post_init__(self):
        check_options(self)

    def sampling(self, setup: Setup) -> Sampling:
        """The setup's sampling settings with these options where given."""
        given = {"num_samples": self.samples, "warmup": self.warmup, "num_chains": self.chains}
        return replace(setup.sampling, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class NUTSOptions(ChainOptions):
    """NUTS chains"""

    target_accept: float | None = setting(None, "target acceptance rate", within=UNIT_OPEN, unset="0.8")
    max_tree_depth: int | None = setting(None, "maximum tree depth", within=COUNT, unset="10")
    backend: str | None = setting(
        None,
        "pyro, or numpyro (chains per datum)",
        choices=list(MCMC.BACKENDS),
        unset="the command's --backend",
    )

    def sampling(self, setup: Setup) -> Sampling:
        given = {
            "target_accept": self.target_accept,
            "max_tree_depth": self.max_tree_depth,
            "backend": self.backend,
        }
        return replace(super().sampling(setup), **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class RWSOptions:
    """Reweighted wake-sleep"""

    k: int = setting(5, "draws of q per datum", within=COUNT)
    insomnia: float = setting(
        1.0, "share of the encoder's update from wake-phi (the rest from sleep-phi)", within=PROBABILITY
    )

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class NVILOptions:
    """NVIL's input-dependent baseline and signal normalisation"""

    hidden: tuple[int, ...] = setting((100,), "the baseline's tanh layer sizes, /-separated", within=COUNT)
    scale: float = setting(10.0, "the baseline's output scale", within=POSITIVE)
    decay: float = setting(
        0.8, "decay of the signal's running mean and variance", within=Range(at_least=0, below=1)
    )

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class GibbsOptions:
    """Gibbs steps per update"""

    k: int = setting(1, "Gibbs steps", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class AdversarialOptions:
    """Adversarial training's pre-training, draws and discriminator"""

    pretrain: int = setting(
        1, "epochs of the story's own objective before the adversarial steps", within=NONNEGATIVE
    )
    critic_steps: int = setting(1, "discriminator steps per generator step", within=COUNT)
    max_length: int = setting(50, "the most words of a draw (real sentences are cut alike)", within=COUNT)
    fixed: bool = setting(False, "draw exactly max_length words, never <eos> (SeqGAN's synthetic setting)")
    critic_dim: int = setting(64, "the discriminator's embedding and LSTM width", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class SeqGANOptions(AdversarialOptions):
    """SeqGAN's roll-outs and baseline"""

    rollouts: int = setting(16, "Monte Carlo roll-outs per drawn prefix", within=COUNT)
    decay: float = setting(
        0.9, "decay of the baseline's running mean of rewards", within=Range(at_least=0, below=1)
    )


@dataclass(frozen=True)
class GumbelOptions(AdversarialOptions):
    """The Gumbel-softmax generator's temperature schedule"""

    tau: float = setting(1.0, "the starting temperature", within=POSITIVE)
    tau_min: float = setting(0.5, "the lowest temperature", within=Range(above=0, at_most=1))
    rate: float = setting(
        1e-3, "temperature decay per generator step: tau * exp(-rate * s)", within=NONNEGATIVE
    )
    hard: bool = setting(True, "straight-through: one-hot words forward, relaxed gradient backward")


def _adversarial(setup: Setup, options: AdversarialOptions, generator_loss) -> AdversarialTraining:
    """A sentence story trained adversarially against a new discriminator on its device."""
    vocab_size = SentenceGenerator(setup.story, options.max_length, options.fixed).decoder.vocab_size
    critic = SentenceDiscriminator(vocab_size, options.critic_dim, options.critic_dim)
    updates = Adversarial(
        critic.to(setup.story.device),
        generator_loss,
        pretrain=options.pretrain,
        critic_steps=options.critic_steps,
        max_length=options.max_length,
        fixed=options.fixed,
    )
    return AdversarialTraining(setup.story, setup.guide, updates, **setup.variational())


def _refine(setup: Setup, options: RefinementOptions):
    trained = setup.trained or Amortized(setup.story, setup.guide, **setup.variational())
    return refined(trained, options.refinement(setup))


def _aggressive(setup: Setup, options: AggressiveOptions):
    updates = Aggressive(
        setup.split("valid", "aggressive"),
        setup.batch_size,
        inner_steps=options.inner,
        patience=options.patience,
        seed=setup.seed,
    )
    return Amortized(setup.story, setup.guide, updates=updates, **setup.variational())


@dataclass(frozen=True)
class CollapsedGibbsOptions:
    """Collapsed Gibbs sampling's sweeps per step"""

    sweeps: int = setting(1, "sweeps of the batch's tokens per step", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class VBOptions:
    """Online variational Bayes's step sizes and per-document updates"""

    kappa: float = setting(
        0.7,
        "the step size's decay rho_t = (tau0 + t)^-kappa (0: full steps, batch VB)",
        within=Range(at_least=0, at_most=1),
    )
    tau0: float = setting(10.0, "the step size's delay tau0", within=Range(at_least=0))
    iterations: int = setting(100, "mean-field updates of each document's gamma at most", within=COUNT)
    tolerance: float = setting(
        1e-3, "stop a document's updates below this mean change of gamma", within=POSITIVE
    )

    def __post_init__(self):
        check_options(self)


def _nvil(setup: Setup, options: NVILOptions):
    """NVIL with a baseline over the width of the training data's inputs."""
    inputs = setup.split("train", "nvil").batch([0]).inputs
    if not inputs.is_floating_point():
        raise SettingsError(
            "nvil's baseline is an MLP of the inputs' vectors (word counts); these data are token ids"
        )
    return NVIL(
        setup.story,
        setup.guide,
        inputs.shape[-1],
        baseline_hidden=options.hidden,
        baseline_scale=options.scale,
        decay=options.decay,
        **setup.training.arguments(),
    )


for _kind in (
    InferenceKind(
        "vae",
        "amortized VI: lambda = enc(x), story and encoder trained jointly",
        lambda s, _: Amortized(s.story, s.guide, **s.variational()),
    ),
    InferenceKind(
        "table",
        "non-amortized VI: a table of lambda per training datum learnt with the story (scores only those data)",
        lambda s, _: NonAmortized(s.story, s.guide, len(s.split("train", "table")), **s.variational()),
    ),
    InferenceKind(
        "svi",
        "per-instance SVI: K refinement steps from the prior; no encoder",
        lambda s, o: StochasticVI(
            s.story, s.guide, o.refinement(s), init_scale=o.init_scale, **s.variational()
        ),
        options=SVIOptions,
        leading="steps",
    ),
    InferenceKind(
        "vae+svi",
        "VAE+SVI: K steps from a detached enc(x); story at lambda_K, encoder on its own ELBO",
        lambda s, o: AmortizedSVI(s.story, s.guide, o.refinement(s), variant=o.variant, **s.variational()),
        options=AmortizedSVIOptions,
        leading="steps",
    ),
    InferenceKind(
        "sa-vae",
        "SA-VAE: K steps from enc(x), differentiated through (exact Hessian-vector products)",
        lambda s, o: SemiAmortized(
            s.story, s.guide, o.refinement(s, hvp=o.hvp, epsilon=o.epsilon), **s.variational()
        ),
        options=SemiAmortizedOptions,
        leading="steps",
    ),
    InferenceKind(
        "sa-vae-fd",
        "SA-VAE with finite-difference Hessian-vector products",
        lambda s, o: SemiAmortized(
            s.story, s.guide, o.refinement(s, hvp="finite-difference", epsilon=o.epsilon), **s.variational()
        ),
        options=FiniteDifferenceOptions,
        leading="steps",
    ),
    InferenceKind(
        "aggressive",
        "He et al.'s aggressive encoder training until the validation MI stops rising",
        _aggressive,
        options=AggressiveOptions,
        leading="inner",
    ),
    InferenceKind(
        "refine",
        "test-time refinement: K detached steps from a trained object's lambda (does not train)",
        _refine,
        options=RefinementOptions,
        leading="steps",
        trains=False,
    ),
    InferenceKind(
        "nuts",
        "MCMC: NUTS over the local latents, the story fixed (does not train)",
        lambda s, o: MCMC(s.story, s.guide, **o.sampling(s).arguments()),
        options=NUTSOptions,
        trains=False,
    ),
    InferenceKind(
        "gibbs",
        "MCMC: single-site Gibbs sweeps over finite discrete local latents (sbn, a mixture), the story fixed (does not train)",
        lambda s, o: MCMC(s.story, s.guide, kernel=DiscreteGibbs(), **o.sampling(s).arguments(nuts=False)),
        options=ChainOptions,
        trains=False,
    ),
    InferenceKind(
        "topic-gibbs",
        "MCMC: collapsed Gibbs over the token topics of an LDA-form story's documents, the topics fixed (does not train)",
        # the chains start at their own prior draws: a story fitted by collapsed Gibbs or VB has
        # a guide without an encoder, and a start drawn per chain suits r-hat
        lambda s, o: MCMC(s.story, kernel=TopicGibbs(), **o.sampling(s).arguments(nuts=False)),
        options=ChainOptions,
        trains=False,
        needs=(DirichletTopics,),
    ),
    InferenceKind(
        "wake-sleep",
        "wake-sleep (Hinton et al. 1995): story on log p(x, h) at h ~ q, encoder on the story's dreams",
        lambda s, _: WakeSleep(s.story, s.guide, **s.training.arguments()),
        own_objective=True,
        kl=False,
        needs=(Dreams,),
    ),
    InferenceKind(
        "rws",
        "reweighted wake-sleep (Bornschein & Bengio 2015): K draws of q per datum, wake-theta and wake-phi",
        lambda s, o: ReweightedWakeSleep(s.story, s.guide, o.k, o.insomnia, **s.training.arguments()),
        options=RWSOptions,
        leading="k",
        own_objective=True,
        kl=False,
    ),
    InferenceKind(
        "nvil",
        "NVIL (Mnih & Gregor 2014): score-function encoder gradient, learned baseline, normalised signal",
        _nvil,
        options=NVILOptions,
        own_objective=True,
        kl=False,
        reads=DOCUMENTS,
    ),
    InferenceKind(
        "cd",
        "contrastive divergence CD-K for undirected stories (rsm): K Gibbs steps from each datum",
        lambda s, o: contrastive(s, o.k, persistent=False),
        options=GibbsOptions,
        leading="k",
        kl=False,
        undirected=True,
    ),
    InferenceKind(
        "pcd",
        "persistent contrastive divergence (Tieleman 2008): K Gibbs steps of persistent chains per update",
        lambda s, o: contrastive(s, o.k, persistent=True),
        options=GibbsOptions,
        leading="k",
        kl=False,
        undirected=True,
    ),
    InferenceKind(
        "seqgan",
        "SeqGAN (Yu et al. 2017): pre-training, then REINFORCE with roll-out rewards from a discriminator",
        lambda s, o: _adversarial(s, o, Reinforce(o.rollouts, o.decay)),
        options=SeqGANOptions,
        leading="rollouts",
        needs=(GeneratesSentences,),
        adversarial=True,
    ),
    InferenceKind(
        "gumbel-gan",
        "Gumbel-softmax GAN (Kusner & Hernandez-Lobato 2016): relaxed draws into a discriminator",
        lambda s, o: _adversarial(s, o, GumbelSoftmax(o.tau, o.tau_min, o.rate, o.hard)),
        options=GumbelOptions,
        needs=(GeneratesSentences,),
        adversarial=True,
    ),
    InferenceKind(
        "collapsed-gibbs",
        "collapsed Gibbs sampling of LDA's token topics (Griffiths & Steyvers 2004): a sweep of the batch's tokens per step",
        lambda s, o: CollapsedGibbs(s.story, o.sweeps),
        options=CollapsedGibbsOptions,
        leading="sweeps",
        own_objective=True,
        own_guide=True,
        kl=False,
        needs=(DirichletTopics,),
        reads=DOCUMENTS,
    ),
    InferenceKind(
        "vb",
        "mean-field variational Bayes for LDA (Blei et al. 2003), online (Hoffman et al. 2010): closed-form updates",
        lambda s, o: VariationalBayes(s.story, o.kappa, o.tau0, o.iterations, o.tolerance),
        options=VBOptions,
        own_objective=True,
        own_guide=True,
        kl=False,
        needs=(DirichletTopics,),
        reads=DOCUMENTS,
    ),
):
    register(_kind)
