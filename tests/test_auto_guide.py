"""The default guide of a user's story, chosen by the supports of its latent sites, and the
objective it is trained with: every family builds, rebuilds from its config, draws on the
support and trains; bounds are checked against Pyro's estimators and exact sums."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from torch import nn

from fabula.data import BagOfWords, BowBatch, Vocab
from fabula.data.text import SPECIALS, TextBatch, TextCorpus, TextVocab
from fabula.distributions import BagOfWordsMultinomial
from fabula.errors import SettingsError
from fabula.evaluation import evaluate
from fabula.guides import NormalGuide, SupportGuide
from fabula.inference import Amortized
from fabula.inference.mean_field import MeanFieldELBO
from fabula.inference.objectives import default_objective
from fabula.models import Story
from fabula.traces import prior_trace, trace_guide

V, K = 12, 3


def bag_of_words(num_docs=24, seed=0) -> BagOfWords:
    """Documents of 10-30 tokens from mixtures of three sparse word distributions."""
    gen = torch.Generator().manual_seed(seed)
    topics = torch.softmax(3 * torch.randn(K, V, generator=gen), -1)
    weights = torch.distributions.Dirichlet(torch.full((K,), 0.3)).sample((num_docs,))
    probs = weights @ topics
    counts = torch.zeros(num_docs, V)
    for d in range(num_docs):
        n = int(torch.randint(10, 31, (), generator=gen))
        words = torch.multinomial(probs[d], n, replacement=True, generator=gen)
        counts[d] = torch.bincount(words, minlength=V).float()
    return BagOfWords.from_dense(counts, Vocab([f"w{i}" for i in range(V)]))


def sentences(num=24, seed=0) -> TextCorpus:
    gen = torch.Generator().manual_seed(seed)
    vocab = TextVocab([*SPECIALS, *(f"w{i}" for i in range(V - len(SPECIALS)))])
    words = len(SPECIALS) + torch.randint(0, V - len(SPECIALS), (num, 6), generator=gen)
    lengths = torch.randint(2, 7, (num,), generator=gen)
    rows = [row[:n].tolist() for row, n in zip(words, lengths.tolist(), strict=True)]
    return TextCorpus(rows, vocab)


def observe_words(batch, logits):
    pyro.sample(
        "x", BagOfWordsMultinomial(logits, total_count=batch.lengths, validate_args=False), obs=batch.counts
    )


class TopicMixture(Story):
    """A logistic-normal mixture of topics: z ~ N(0, I), x ~ Mult(softmax(z) @ softmax(topics))."""

    latent_sites = ("z",)

    def __init__(self, vocab_size: int, num_topics: int):
        super().__init__()
        self.remember(locals())
        self.topics = nn.Parameter(torch.randn(num_topics, vocab_size))
        self.register_buffer("zeros", torch.zeros(num_topics))

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            observe_words(batch, (z.softmax(-1) @ self.topics.softmax(-1)).log())


class ScaledTopics(Story):
    """Positive latents: a sharpness s ~ Gamma(2, 2) and topic weights u ~ HalfNormal(1)^K,
    x ~ Mult(softmax(s * u @ W + b))."""

    latent_sites = ("s", "u")

    def __init__(self, vocab_size: int, num_topics: int):
        super().__init__()
        self.remember(locals())
        self.weight = nn.Parameter(torch.randn(num_topics, vocab_size))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.register_buffer("ones", torch.ones(num_topics))

    def model(self, batch):
        with self.data_plate(batch):
            s = pyro.sample("s", dist.Gamma(2.0 * self.ones[0], 2.0))
            u = pyro.sample("u", dist.HalfNormal(self.ones).to_event(1))
            observe_words(batch, s[..., None] * (u @ self.weight) + self.bias)


class DirichletTopics(Story):
    """Topic proportions on the simplex: theta ~ Dirichlet(0.5), x ~ Mult(theta @ softmax(topics))."""

    latent_sites = ("theta",)

    def __init__(self, vocab_size: int, num_topics: int):
        super().__init__()
        self.remember(locals())
        self.topics = nn.Parameter(torch.randn(num_topics, vocab_size))
        self.register_buffer("alpha", torch.full((num_topics,), 0.5))

    def model(self, batch):
        with self.data_plate(batch):
            theta = pyro.sample("theta", dist.Dirichlet(self.alpha))
            observe_words(batch, (theta @ self.topics.softmax(-1)).log())


class BinaryUnits(Story):
    """A one-layer sigmoid belief net on words: h ~ Bernoulli(1/2)^F, x ~ Mult(softmax(h @ W + b))."""

    latent_sites = ("h",)

    def __init__(self, vocab_size: int, units: int):
        super().__init__()
        self.remember(locals())
        self.weight = nn.Parameter(torch.randn(units, vocab_size))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.register_buffer("prior_logits", torch.zeros(units))

    def model(self, batch):
        with self.data_plate(batch):
            h = pyro.sample("h", dist.Bernoulli(logits=self.prior_logits).to_event(1))
            observe_words(batch, h @ self.weight + self.bias)


class WordMixture(Story):
    """A mixture of unigrams: c ~ Cat(softmax(pi)), x ~ Mult(softmax(components[c]))."""

    latent_sites = ("c",)

    def __init__(self, vocab_size: int, num_components: int):
        super().__init__()
        self.remember(locals())
        self.mixture_logits = nn.Parameter(torch.zeros(num_components))
        self.components = nn.Parameter(torch.randn(num_components, vocab_size))

    def model(self, batch):
        with self.data_plate(batch):
            c = pyro.sample("c", dist.Categorical(logits=self.mixture_logits))
            observe_words(batch, self.components[c])

    def log_joint(self, counts):
        """``[B, K]``: log p(x_b, c = k), written out by hand."""
        words = (counts[:, None, :] * self.components.log_softmax(-1)).sum(-1)
        return self.mixture_logits.log_softmax(-1) + words


class SentenceTopic(Story):
    """Sentences whose words are drawn i.i.d. given a Gaussian code: z ~ N(0, I),
    w_t ~ Cat(softmax(z @ W + b)), the padding masked out."""

    latent_sites = ("z",)

    def __init__(self, vocab_size: int, latent_dim: int):
        super().__init__()
        self.remember(locals())
        self.weight = nn.Parameter(torch.randn(latent_dim, vocab_size))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.register_buffer("zeros", torch.zeros(latent_dim))

    def model(self, batch):
        steps = batch.targets.shape[-1]
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            logits = (z @ self.weight + self.bias).unsqueeze(-2)
            logits = logits.expand(*logits.shape[:-2], steps, logits.shape[-1])
            pyro.sample("x", dist.Categorical(logits=logits).mask(batch.mask).to_event(1), obs=batch.targets)


def make(name):
    """(story, corpus, guide kwargs) of each case."""
    if name == "sentences":
        return SentenceTopic(V, 2), sentences(), {"input_dim": V, "embed_dim": 8}
    story = {
        "real": TopicMixture(V, K),
        "positive": ScaledTopics(V, K),
        "simplex": DirichletTopics(V, K),
        "binary": BinaryUnits(V, 4),
        "discrete": WordMixture(V, K),
    }[name]
    return story, bag_of_words(), {}


CASES = {
    # name: (families, objective type)
    "real": (["normal"], type(None)),
    "positive": (["constrained", "constrained"], type(None)),
    "simplex": (["constrained"], type(None)),
    "binary": (["bernoulli"], Trace_ELBO),
    "discrete": (["categorical"], TraceEnum_ELBO),
    "sentences": (["normal"], type(None)),
}


def first_batch(corpus, size=8):
    return next(corpus.batches(size))


@pytest.mark.parametrize("name", list(CASES))
def test_guide_is_chosen_by_support_rebuilds_and_draws_on_the_support(name):
    torch.manual_seed(0)
    story, corpus, kwargs = make(name)
    batch = first_batch(corpus)
    guide = SupportGuide.for_story(story, batch, hidden=(16,), **kwargs)
    families, objective = CASES[name]
    assert [s["family"] for s in guide.config()["sites"]] == families
    assert isinstance(default_objective(guide), objective)

    # rebuilt from its JSON config, on the meta device too, with identical λ once loaded
    config = json.loads(json.dumps(guide.config()))
    with torch.device("meta"):
        assert all(p.is_meta for p in type(guide)(**config).parameters())
    rebuilt = type(guide)(**config)
    rebuilt.load_state_dict(guide.state_dict())
    params, again = guide.local_params(batch), rebuilt.local_params(batch)
    assert params.keys() == again.keys() and all(torch.equal(params[k], again[k]) for k in params)
    assert all(v.shape[0] == batch.size and k.split("_")[0] in story.latent_sites for k, v in params.items())

    # draws of q (with a leading particle dimension) lie on the support of the story's site
    prior = prior_trace(story, batch)
    with torch.no_grad():
        trace = trace_guide(guide, batch, num_samples=5)
    for site in story.latent_sites:
        p, q = prior.nodes[site]["fn"], trace.nodes[site]
        assert q["value"].shape == (5, batch.size, *p.event_shape)
        assert bool(p.support.check(q["value"]).all()), site
    # starting values for non-amortized inference: λ = 0, the shapes of the encoder's
    start = guide.init_params(batch.size)
    assert {k: v.shape for k, v in start.items()} == {k: v.shape for k, v in params.items()}
    assert all(bool((v == 0).all()) for v in start.values())


@pytest.mark.parametrize("name", list(CASES))
def test_amortized_inference_trains_with_the_default_objective(name):
    torch.manual_seed(0)
    story, corpus, kwargs = make(name)
    guide = SupportGuide.for_story(story, first_batch(corpus), hidden=(16,), **kwargs)
    inference = Amortized(story, guide, objective=default_objective(guide), optim_args={"lr": 3e-2})
    losses = [h["loss"] for h in inference.fit(corpus, epochs=12, batch_size=8, progress=False)]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) < sum(losses[:4]), losses
    # evaluated like any story (a pushed site, without a closed-form mean, counts no active units)
    report = evaluate(inference, corpus, "elbo").summary()
    assert math.isfinite(report["nll"]) and report["nll"] > 0


def test_the_fabula_bound_of_a_real_latent_matches_pyros_trace_elbo():
    """evaluate's ELBO (analytic KL, S draws) against Pyro's TraceMeanField_ELBO and Trace_ELBO
    with many particles at the same parameters, within four Monte Carlo standard errors."""
    torch.manual_seed(0)
    story, corpus, _ = make("real")
    guide = SupportGuide.for_story(story, first_batch(corpus), hidden=(16,))
    inference = Amortized(story, guide)
    inference.fit(corpus, epochs=3, batch_size=8, progress=False)
    batch = corpus.batch(torch.arange(len(corpus)))

    def estimates(run, repeats=24):
        values = torch.tensor([run(i) for i in range(repeats)], dtype=torch.float64)
        return values.mean(), values.std() / math.sqrt(repeats)

    def fabula(i):
        pyro.set_rng_seed(100 + i)
        return float(evaluate(inference, corpus, "elbo:400", batch_size=len(corpus)).nll.double().sum())

    def pyro_loss(elbo):
        def run(i):
            pyro.set_rng_seed(200 + i)
            with torch.no_grad():
                return elbo.loss(story.model, guide, batch)

        return run

    ours, ours_se = estimates(fabula)
    kl = float(evaluate(inference, corpus, "elbo", batch_size=len(corpus)).kl.double().sum())
    for elbo in (
        TraceMeanField_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1),
        Trace_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1),
    ):
        theirs, theirs_se = estimates(pyro_loss(elbo))
        tolerance = 4 * math.sqrt(ours_se**2 + theirs_se**2)
        assert abs(ours - theirs) < tolerance, (ours, theirs, tolerance)
        assert tolerance < kl / 4  # sharp enough to see the KL term missing or doubled


def test_enumerated_mixture_with_the_exact_posterior_gives_the_exact_marginal():
    story, corpus, _ = make("discrete")
    story = story.double()
    batch = corpus.batch(torch.arange(len(corpus)))
    batch = BowBatch(batch.counts.double(), batch.index, batch.labels)
    guide = SupportGuide.for_story(story, batch, hidden=(16,)).double()
    objective = default_objective(guide)
    with torch.no_grad():
        joint = story.log_joint(batch.counts)
        exact = torch.logsumexp(joint, -1).sum()
        posterior = {"c_logits": joint - torch.logsumexp(joint, -1, keepdim=True)}
        elbo = -objective.loss(story.model, lambda b: guide(b, posterior), batch)
        uniform = -objective.loss(story.model, lambda b: guide(b, guide.init_params(b.size, "cpu")), batch)
    assert abs(elbo - float(exact)) < 1e-4
    # any other q bounds it from below by KL(q || p(c | x)), here computed by hand
    log_q = torch.full_like(joint, -math.log(K))
    gap = (log_q.exp() * (log_q - posterior["c_logits"])).sum()
    assert uniform == pytest.approx(float(exact - gap), abs=1e-4)


@pytest.mark.parametrize("name", ["positive", "simplex"])
def test_the_mean_field_elbo_scores_a_pushed_site_as_trace_elbo_does(name):
    """Why a pushed site keeps fabula's default objective: torch has no KL from q to these
    priors, and the mean-field ELBO then takes log q(z) - log p(z) at the same reparameterised
    draw as Pyro's Trace_ELBO."""
    story, corpus, _ = make(name)
    batch = first_batch(corpus)
    guide = SupportGuide.for_story(story, batch, hidden=(16,))
    losses = []
    for elbo in (MeanFieldELBO(), Trace_ELBO()):
        pyro.set_rng_seed(3)
        losses.append(elbo.loss(story.model, guide, batch))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


class SmallChoices(Story):
    """Finite and bounded latents of several kinds: a coin b, a one-hot choice k of three, a
    count n in 0..4 and a level u in (0, 2), all setting the words' logits."""

    latent_sites = ("b", "k", "n", "u")

    def __init__(self, vocab_size: int):
        super().__init__()
        self.remember(locals())
        self.weight = nn.Parameter(torch.randn(6, vocab_size))

    def model(self, batch):
        w = self.weight
        with self.data_plate(batch):
            b = pyro.sample("b", dist.Bernoulli(0.3 * torch.ones_like(w[0, 0])))
            k = pyro.sample("k", dist.OneHotCategorical(logits=torch.zeros_like(w[0, :3])))
            n = pyro.sample("n", dist.Binomial(4, 0.5 * torch.ones_like(w[0, 0])))
            u = pyro.sample("u", dist.Uniform(torch.zeros_like(w[0, 0]), 2.0))
            logits = b[..., None] * w[0] + k @ w[1:4] + n[..., None] * w[4] + u[..., None] * w[5]
            observe_words(batch, logits)


def test_finite_sites_are_enumerated_and_bounded_ones_pushed_onto_their_interval():
    story, corpus = SmallChoices(V), bag_of_words()
    batch = first_batch(corpus)
    guide = SupportGuide.for_story(story, batch, hidden=(16,))
    sites = {s["name"]: s for s in guide.config()["sites"]}
    assert [sites[n]["family"] for n in "bknu"] == ["bernoulli", "one_hot", "categorical", "constrained"]
    assert (sites["k"]["categories"], sites["n"]["categories"]) == (3, 5)
    assert sites["u"]["support"] == {"constraint": "interval", "lower_bound": 0.0, "upper_bound": 2.0}
    assert guide.enumerated_sites == ("b", "k", "n")
    objective = default_objective(guide)
    assert isinstance(objective, TraceEnum_ELBO)
    prior = prior_trace(story, batch)
    with torch.no_grad():
        trace = trace_guide(guide, batch, num_samples=50)
    for site in story.latent_sites:
        assert bool(prior.nodes[site]["fn"].support.check(trace.nodes[site]["value"]).all()), site
    inference = Amortized(story, guide, objective=objective, optim_args={"lr": 3e-2})
    losses = [h["loss"] for h in inference.fit(corpus, epochs=8, batch_size=8, progress=False)]
    assert all(math.isfinite(x) for x in losses) and sum(losses[-3:]) < sum(losses[:3])


class Counts(Story):
    """An unbounded integer latent: n ~ Poisson(3), the words' sharpness."""

    latent_sites = ("n",)

    def __init__(self):
        super().__init__()
        self.remember({})
        self.weight = nn.Parameter(torch.randn(V))

    def model(self, batch):
        with self.data_plate(batch):
            n = pyro.sample("n", dist.Poisson(3.0 * torch.ones_like(self.weight[0])))
            observe_words(batch, n[..., None] * self.weight)


class TokenLatents(SentenceTopic):
    """A latent per position of the padded batch: its shape follows the batch's width."""

    latent_sites = ("z", "u")

    def model(self, batch):
        steps = batch.targets.shape[-1]
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            u = pyro.sample("u", dist.Normal(self.zeros[0], 1.0).expand([steps]).to_event(1))
            logits = (z @ self.weight + self.bias).unsqueeze(-2) + u[..., None]
            pyro.sample("x", dist.Categorical(logits=logits).mask(batch.mask).to_event(1), obs=batch.targets)


class GlobalLatent(TopicMixture):
    """A latent outside the data plate, listed with the local ones."""

    latent_sites = ("z", "g")

    def model(self, batch):
        pyro.sample("g", dist.Normal(0.0, 1.0))
        super().model(batch)


@pytest.mark.parametrize(
    "story, corpus, site, reason",
    [
        (Counts(), bag_of_words(), "n", "discrete and not finite"),
        (TokenLatents(V, 2), sentences(), "u", "changes with the batch"),
        (GlobalLatent(V, K), bag_of_words(), "g", "data plate"),
    ],
)
def test_a_site_no_family_serves_is_refused_by_name(story, corpus, site, reason):
    with pytest.raises(
        SettingsError, match=f"site '{site}' of {type(story).__name__} .*{reason}.*write a guide"
    ):
        SupportGuide.for_story(story, first_batch(corpus), input_dim=V)


def test_default_objective_refuses_other_guides_and_sentences_need_a_vocabulary():
    with pytest.raises(SettingsError, match="SupportGuide"):
        default_objective(NormalGuide(V, K))
    with pytest.raises(SettingsError, match="input_dim"):
        SupportGuide.for_story(SentenceTopic(V, 2), first_batch(sentences()))
    batch = TextBatch.from_ids([[4, 5], [6]])
    guide = SupportGuide.for_story(SentenceTopic(V, 2), batch, input_dim=V, hidden=())
    assert guide.local_params(batch)["z_loc"].shape == (2, 2)
