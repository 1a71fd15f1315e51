"""The stories fabula ships, registered the way a user's story is (:mod:`fabula.run.stories`):
each one's settings (with its own defaults), how to build it and its guide, its training
objective, the training defaults that work for it and its per-epoch callbacks."""

from __future__ import annotations

from dataclasses import dataclass

from pyro.infer import TraceEnum_ELBO

from fabula.data import DOCUMENTS, SENTENCES
from fabula.errors import SettingsError
from fabula.guides import (
    AutoregressiveBernoulliGuide,
    BernoulliGuide,
    EmptyGuide,
    LogisticNormalGuide,
    MixtureGuide,
    NormalGuide,
    SentenceGuide,
)
from fabula.inference import ContrastiveObjective, DispersedELBO
from fabula.inference.spec import split
from fabula.models import (
    FDARN,
    GMVAE,
    GSM,
    LDA,
    LSTMVAE,
    NVDM,
    RNNLM,
    DocNADE,
    ReplicatedSoftmax,
    SigmoidBeliefNet,
)
from fabula.nn.output import output_setting, parse_output
from fabula.run.callbacks import MixtureDiagnostics, Reconstruction, Topics
from fabula.run.objectives import binary_objective, continuous_objective, likelihood_objective
from fabula.run.stories import Recipe, register_story
from fabula.settings import COUNT, NONNEGATIVE, POSITIVE, PROBABILITY, Range, check_ranges, setting

#: The dropout rates a setting accepts: [0, 1).
DROPOUT = Range(at_least=0, below=1)


@dataclass
class NVDMSettings:
    """NVDM (Miao et al. 2016): a bag-of-words VAE with an MLP encoder"""

    latent_dim: int = setting(50, "size of z", within=COUNT)
    hidden: tuple[int, ...] = setting(
        (500,), "encoder hidden layer sizes (no sizes: a linear encoder)", within=COUNT
    )
    activation: str = setting("tanh", "encoder activation", choices=["tanh", "relu", "softplus"])

    def __post_init__(self):
        check_ranges(self)


@dataclass
class RNNLMSettings:
    """RNNLM: an LSTM language model (no latent)"""

    embed_dim: int = setting(256, "word embedding size", within=COUNT)
    hidden_dim: int = setting(256, "LSTM size", within=COUNT)
    tie: bool = setting(False, "tie input and output embeddings")
    dropout: float = setting(0.0, "dropout in the decoder", within=DROPOUT)
    reverse: bool = setting(False, "read sentences right to left (the backward LM of fabula cgmh)")
    output: str = output_setting()

    def __post_init__(self):
        check_ranges(self)
        parse_output(self.output)


@dataclass
class LSTMVAESettings:
    """LSTM-VAE (Bowman et al. 2016; Kim et al. 2018): z sets the decoder's state and feeds every step"""

    latent_dim: int = setting(32, "size of z", within=COUNT)
    embed_dim: int = setting(256, "word embedding size", within=COUNT)
    hidden_dim: int = setting(256, "LSTM size", within=COUNT)
    encoder: str = setting("lstm", "guide encoder", choices=["lstm", "bow"])
    z_every_step: bool = setting(True, "feed z to every decoder input, not only its initial state")
    tie: bool = setting(False, "tie input and output embeddings")
    dropout: float = setting(0.0, "dropout in the decoder", within=DROPOUT)
    output: str = output_setting()

    def __post_init__(self):
        check_ranges(self)
        parse_output(self.output)


@dataclass
class GMVAESettings:
    """GMVAE / DGMVAE (Shi et al. 2020): discrete-continuous latent pairs, c summed out exactly"""

    num_components: int = setting(10, "mixture components K per pair", within=COUNT)
    num_pairs: int = setting(1, "independent (c, z) pairs M", within=COUNT)
    latent_dim: int = setting(8, "size of each z", within=COUNT)
    embed_dim: int = setting(256, "word embedding size", within=COUNT)
    hidden_dim: int = setting(256, "LSTM size", within=COUNT)
    dropout: float = setting(0.0, "dropout in the decoder", within=DROPOUT)
    dispersion: float = setting(0.0, "DGMVAE's dispersion weight beta' (0: the GMVAE)", within=PROBABILITY)
    mutual_information: float = setting(0.0, "weight of DGMVAE's I(x; c) term", within=NONNEGATIVE)
    output: str = output_setting()

    def __post_init__(self):
        check_ranges(self)
        parse_output(self.output)


@dataclass
class SBNSettings:
    """SBN (Mnih & Gregor 2014): a sigmoid belief net over documents, F binary units, and a Bernoulli recognition network"""

    latent_dim: int = setting(50, "binary units F (Mnih & Gregor's 20 Newsgroups SBN has 50)", within=COUNT)
    hidden: tuple[int, ...] = setting(
        (),
        "recognition network hidden layer sizes (no sizes: logistic regression, as Mnih & Gregor)",
        within=COUNT,
    )
    activation: str = setting("tanh", "recognition network activation", choices=["tanh", "relu", "softplus"])

    def __post_init__(self):
        check_ranges(self)


@dataclass
class FDARNSettings(SBNSettings):
    """fDARN (Mnih & Gregor 2014): the SBN with autoregressive binary units in its prior and in its recognition network"""


@dataclass
class RSMSettings:
    """Replicated Softmax (Salakhutdinov & Hinton 2009): an undirected topic model of F binary hidden units, trained by contrastive divergence"""

    hidden: int = setting(50, "binary hidden units F", within=COUNT)
    max_gibbs_steps: int = setting(
        5, "CD's Gibbs steps rise from K of cd:K or pcd:K to this (the paper: from 1 to 5)", within=COUNT
    )
    steps_every: int = setting(20_000, "updates before each further Gibbs step", within=COUNT)
    momentum: float = setting(
        0.0,
        "SGD momentum of the first --momentum-epochs epochs (with --optimizer sgd; Hinton's RBM recipe: 0.5)",
        within=Range(at_least=0, below=1),
    )
    final_momentum: float = setting(
        0.0, "SGD momentum after them (Hinton's RBM recipe: 0.9)", within=Range(at_least=0, below=1)
    )
    momentum_epochs: int = setting(
        0, "epochs at the first momentum (Hinton's RBM recipe: 5)", within=NONNEGATIVE
    )
    weight_cost: float = setting(2e-4, "L2 weight cost on W (not on the biases)", within=NONNEGATIVE)

    def __post_init__(self):
        check_ranges(self)


@dataclass
class DocNADESettings:
    """docNADE (Larochelle & Lauly 2012): a neural autoregressive model of documents (no latent), words read in random orders"""

    hidden: int = setting(50, "hidden units H", within=COUNT)
    activation: str = setting("sigmoid", "hidden activation g (the paper's)", choices=["sigmoid", "tanh"])
    orders: int = setting(
        1, "word orders averaged per document in evaluation (training reads one random order)", within=COUNT
    )

    def __post_init__(self):
        check_ranges(self)


@dataclass
class LDASettings:
    """LDA (Blei et al. 2003): K topics, Dirichlet topic proportions per document; trained by vae (a logistic-normal encoder), collapsed-gibbs or vb"""

    num_topics: int = setting(50, "topics K", within=COUNT)
    alpha: float = setting(
        1.0,
        "symmetric Dirichlet concentration of each document's topic proportions (Griffiths & Steyvers's 50/K at K = 50)",
        within=POSITIVE,
    )
    eta: float = setting(
        0.01, "symmetric Dirichlet concentration of each topic (collapsed-gibbs, vb)", within=POSITIVE
    )
    hidden: tuple[int, ...] = setting(
        (100, 100),
        "encoder hidden layer sizes of the logistic-normal guide (Srivastava & Sutton's)",
        within=COUNT,
    )
    activation: str = setting("softplus", "encoder activation", choices=["tanh", "relu", "softplus"])

    def __post_init__(self):
        check_ranges(self)


@dataclass
class GSMSettings:
    """GSM (Miao et al. 2017): topic proportions softmax(W x + c) of a Gaussian x, topics from topic and word vectors"""

    num_topics: int = setting(50, "topics K", within=COUNT)
    latent_dim: int = setting(50, "size H of the Gaussian x", within=COUNT)
    embed_dim: int = setting(100, "size E of the topic and word vectors", within=COUNT)
    hidden: tuple[int, ...] = setting(
        (256,), "encoder hidden layer sizes (no sizes: a linear encoder)", within=COUNT
    )
    activation: str = setting("tanh", "encoder activation", choices=["tanh", "relu", "softplus"])

    def __post_init__(self):
        check_ranges(self)


def _nvdm(s: NVDMSettings, train):
    V = len(train.vocab)
    story = NVDM(V, s.latent_dim)
    story.init_background(train)
    return story, NormalGuide(V, s.latent_dim, hidden=list(s.hidden), activation=s.activation)


def _sbn(s: SBNSettings, train):
    V = len(train.vocab)
    story = SigmoidBeliefNet(V, s.latent_dim)
    story.init_background(train)
    return story, BernoulliGuide(V, s.latent_dim, hidden=list(s.hidden), activation=s.activation)


def _fdarn(s: FDARNSettings, train):
    V = len(train.vocab)
    story = FDARN(V, s.latent_dim)
    story.init_background(train)
    return story, AutoregressiveBernoulliGuide(
        V, s.latent_dim, hidden=list(s.hidden), activation=s.activation
    )


def _rsm(s: RSMSettings, train):
    story = ReplicatedSoftmax(len(train.vocab), s.hidden)
    story.init_background(train)
    return story, EmptyGuide()


def _lda(s: LDASettings, train):
    V = len(train.vocab)
    story = LDA(V, s.num_topics, s.alpha, s.eta)
    story.init_background(train)
    return story, LogisticNormalGuide(V, s.num_topics, hidden=list(s.hidden), activation=s.activation)


def _gsm(s: GSMSettings, train):
    V = len(train.vocab)
    story = GSM(V, s.num_topics, s.latent_dim, s.embed_dim)
    story.init_background(train)
    return story, NormalGuide(V, s.latent_dim, hidden=list(s.hidden), activation=s.activation)


def _rnnlm(s: RNNLMSettings, train):
    return RNNLM(
        len(train.vocab), s.embed_dim, s.hidden_dim, s.tie, s.dropout, s.reverse, s.output
    ), EmptyGuide()


def _docnade(s: DocNADESettings, train):
    story = DocNADE(len(train.vocab), s.hidden, s.activation, s.orders)
    story.init_background(train)
    return story, EmptyGuide()


def _lstm_vae(s: LSTMVAESettings, train):
    V = len(train.vocab)
    story = LSTMVAE(V, s.latent_dim, s.embed_dim, s.hidden_dim, s.z_every_step, s.tie, s.dropout, s.output)
    return story, SentenceGuide(V, s.latent_dim, s.embed_dim, s.hidden_dim, s.encoder)


def _gmvae(s: GMVAESettings, train):
    V = len(train.vocab)
    story = GMVAE(
        V, s.num_components, s.latent_dim, s.num_pairs, s.embed_dim, s.hidden_dim, s.dropout, s.output
    )
    return story, MixtureGuide(V, s.num_components, s.latent_dim, s.num_pairs, s.embed_dim, s.hidden_dim)


def topic_objective(story_settings: LDASettings, inference, guide=None):
    """The ELBO of the lda story (its KL by Monte Carlo: torch has none between the logistic-normal
    q and the Dirichlet prior), refusing free bits, which need an analytic KL."""
    if inference.free_bits is not None:
        raise SettingsError(
            "--free-bits needs an analytic KL, and the lda story's Dirichlet prior against its "
            "logistic-normal guide has none (give none)"
        )
    return continuous_objective(story_settings, inference, guide)


def contrastive_objective(story_settings: RSMSettings, inference, guide=None) -> ContrastiveObjective:
    """The objective of an undirected story: contrastive divergence (``cd:K``, ``pcd:K``) with its
    weight cost and its schedules of Gibbs steps and momentum."""
    if split(inference.inference).name not in ("cd", "pcd"):
        raise SettingsError(
            f"the rsm story is undirected (no Pyro model to bound): train it with cd:K or pcd:K, "
            f"not {inference.inference!r}"
        )
    if inference.anneal or inference.free_bits is not None:
        raise SettingsError(
            "--anneal and --free-bits act on a KL; contrastive divergence has none (give none)"
        )
    s = story_settings
    return ContrastiveObjective(
        s.weight_cost, s.max_gibbs_steps, s.steps_every, s.momentum, s.final_momentum, s.momentum_epochs
    )


def mixture_objective(story_settings: GMVAESettings, inference, guide=None):
    """The mixture ELBO with c summed out exactly, and DGMVAE's terms when weighted."""
    if inference.elbo != "meanfield" or inference.free_bits is not None:
        raise SettingsError("the gmvae story trains on TraceEnum_ELBO; --elbo and --free-bits do not apply")
    if story_settings.dispersion or story_settings.mutual_information:
        return DispersedELBO(story_settings.dispersion, story_settings.mutual_information)
    return TraceEnum_ELBO(max_plate_nesting=1)


for _name, _recipe in {
    "nvdm": Recipe(
        NVDM,
        NormalGuide,
        NVDMSettings,
        _nvdm,
        DOCUMENTS,
        callbacks=(Topics(),),
    ),
    "sbn": Recipe(
        SigmoidBeliefNet,
        BernoulliGuide,
        SBNSettings,
        _sbn,
        DOCUMENTS,
        objective=binary_objective,
        defaults={"inference": {"inference": "nvil", "elbo": "trace"}},
        callbacks=(Topics(),),
    ),
    "fdarn": Recipe(
        FDARN,
        AutoregressiveBernoulliGuide,
        FDARNSettings,
        _fdarn,
        DOCUMENTS,
        objective=binary_objective,
        defaults={"inference": {"inference": "nvil", "elbo": "trace"}},
        callbacks=(Topics(),),
    ),
    "rnnlm": Recipe(RNNLM, EmptyGuide, RNNLMSettings, _rnnlm, SENTENCES, objective=likelihood_objective),
    "docnade": Recipe(
        DocNADE,
        EmptyGuide,
        DocNADESettings,
        _docnade,
        DOCUMENTS,
        objective=likelihood_objective,
        callbacks=(Topics(),),
        evaluation="exact",
    ),
    "lstm-vae": Recipe(
        LSTMVAE,
        SentenceGuide,
        LSTMVAESettings,
        _lstm_vae,
        SENTENCES,
        # against posterior collapse: KL annealing with free bits (the recorded PTB recipe's remedies)
        defaults={"inference": {"anneal": "linear:8000", "free_bits": 0.2}, "optimizer": {"clip_norm": 5.0}},
    ),
    "gmvae": Recipe(
        GMVAE,
        MixtureGuide,
        GMVAESettings,
        _gmvae,
        SENTENCES,
        objective=mixture_objective,
        callbacks=(MixtureDiagnostics(),),
    ),
    "rsm": Recipe(
        ReplicatedSoftmax,
        EmptyGuide,
        RSMSettings,
        _rsm,
        DOCUMENTS,
        objective=contrastive_objective,
        # the paper's mini-batches of 100 (Adam: see ContrastiveObjective); no reference NVDM on
        # synthetic data, which AIS cannot score beside it
        defaults={"inference": {"inference": "cd:1"}, "run": {"batch_size": 100, "reference": False}},
        callbacks=(Reconstruction(), Topics()),
        evaluation=None,
    ),
    "lda": Recipe(
        LDA,
        LogisticNormalGuide,
        LDASettings,
        _lda,
        DOCUMENTS,
        objective=topic_objective,
        # Srivastava & Sutton's batches of 200 and step size 0.002 for the encoder
        defaults={"run": {"batch_size": 200}, "optimizer": {"lr": 0.002}},
        callbacks=(Topics(),),
        # needs no q, so it scores the topics of every kind alike, and cheaply
        evaluation="left-to-right:5",
    ),
    "gsm": Recipe(
        GSM,
        NormalGuide,
        GSMSettings,
        _gsm,
        DOCUMENTS,
        # NVDM's batches of 64 and step size 5e-4 (Miao et al. 2016), as the nvdm benchmark rows
        defaults={"run": {"batch_size": 64}, "optimizer": {"lr": 5e-4}},
        callbacks=(Topics(),),
    ),
}.items():
    register_story(_name, _recipe)
