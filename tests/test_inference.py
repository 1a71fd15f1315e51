import math
import warnings

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from fabula.errors import UsageError
from fabula.evaluation import elbo_terms, evaluate
from fabula.inference import (
    Aggressive,
    Amortized,
    FreeBitsELBO,
    MeanFieldELBO,
    NonAmortized,
    Refinement,
    RefinementWarning,
    SemiAmortized,
    StochasticVI,
    parse_schedule,
    refined,
)
from fabula.inference.annealing import Cyclical, Linear, Logistic, annealed
from fabula.inference.trainer import make_optimizer
from helpers import linear_gaussian_setup, nvdm_setup, sentence_setup

SETUPS = {
    "nvdm": nvdm_setup,
    "linear-gaussian": linear_gaussian_setup,
    "rnnlm": lambda: sentence_setup(latent=False),
    "lstm-vae": sentence_setup,
}


def make(name, story, guide, data):
    if name == "amortized":
        return Amortized(story, guide)
    if name == "amortized-trace-elbo":
        return Amortized(story, guide, objective=Trace_ELBO())
    if name == "amortized-annealed-free-bits":
        return Amortized(story, guide, objective=FreeBitsELBO(0.5), annealing=Linear(10), clip_norm=1.0)
    if name == "non-amortized":
        return NonAmortized(story, guide, num_data=len(data))
    if name == "aggressive":
        return Amortized(story, guide, updates=Aggressive(data, batch_size=8, inner_steps=4, patience=2))
    if name == "svi":
        return StochasticVI(story, guide, Refinement(steps=2, lr=0.1))
    if name == "sa-vae":
        return SemiAmortized(story, guide, Refinement(steps=2, lr=0.1))
    if name == "sa-vae-fd":
        return SemiAmortized(story, guide, Refinement(steps=2, lr=0.1, hvp="finite-difference"))
    raise KeyError(name)


def train_split(data):
    return data["train"] if isinstance(data, dict) else data


@pytest.mark.parametrize("setup", sorted(SETUPS))
@pytest.mark.parametrize(
    "inference",
    [
        "amortized",
        "amortized-trace-elbo",
        "amortized-annealed-free-bits",
        "non-amortized",
        "aggressive",
        "svi",
        "sa-vae",
    ],
)
def test_every_story_guide_inference_pair_takes_a_step(setup, inference, device):
    story, guide, data = SETUPS[setup]()
    if inference == "aggressive" and not story.latent_sites:
        with pytest.raises(ValueError, match="no latent"):
            make(inference, story, guide, train_split(data))
        return
    data = train_split(data)
    story.to(device), guide.to(device)
    inf = make(inference, story, guide, data)
    inf.begin(data)
    before = [p.detach().clone() for p in inf.params]
    batch = next(data.batches(16, shuffle=True, device=device))
    metrics = inf.step(batch)
    assert math.isfinite(metrics["loss"]) and inf.num_steps == 1
    assert any(not torch.equal(a, p) for a, p in zip(before, inf.params, strict=True))
    samples = inf.posterior(batch, 5)
    assert set(samples) == set(story.latent_sites)
    if story.latent_sites:
        assert samples["z"].shape == (5, 16, story.latent_dim)


def test_one_story_fitted_by_two_inference_objects():
    """The same LinearGaussian class is fitted by amortized and non-amortized VI from a poor
    start; both bring the exact log-likelihood of the data close to the generating model's."""
    for name in ("amortized", "non-amortized"):
        story, guide, data = linear_gaussian_setup(num_data=256)
        truth = story.log_marginal(data.x).mean().item()
        with torch.no_grad():
            story.weight.mul_(0.1)
        start = story.log_marginal(data.x).mean().item()
        if name == "amortized":
            inf = Amortized(story, guide, optim_args={"lr": 0.03})
        else:
            inf = NonAmortized(story, guide, num_data=len(data), optim_args={"lr": 0.03})
        inf.fit(data, epochs=60, batch_size=32, progress=False)
        end = story.log_marginal(data.x).mean().item()
        # the start is > 2 nats per datum below the truth; fitted, both are within 0.3 of it
        # (a maximum-likelihood fit of 256 data may exceed the truth by a little)
        assert truth - start > 2.0
        assert abs(end - truth) < 0.3, (name, start, end, truth)


def test_annealing_weights_only_the_latent_terms():
    story, guide, corpus = nvdm_setup()
    batch = corpus["train"].batch(torch.arange(8))
    elbo = TraceMeanField_ELBO()
    for beta in (0.0, 0.3, 1.0):
        pyro.set_rng_seed(3)
        loss = elbo.differentiable_loss(annealed(story.model, beta), annealed(guide, beta), batch)
        pyro.set_rng_seed(3)
        recon, kl = elbo_terms(story, guide, batch, 1)
        assert torch.isclose(loss, -(recon - beta * kl["z"]).sum(), rtol=1e-5)
    with pytest.raises(ValueError):
        annealed(story.model, -0.1)(batch)


def test_schedules():
    assert [Linear(10)(t) for t in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    assert Logistic(0.1, 50)(50) == 0.5 and Logistic(0.1, 50)(0) < 0.01
    assert [Cyclical(10, 0.5)(t) for t in (0, 2, 5, 9, 10, 12)] == [0.0, 0.4, 1.0, 1.0, 0.0, 0.4]
    assert parse_schedule("linear:100")(50) == 0.5
    assert parse_schedule("cyclical:10:0.5") == Cyclical(10, 0.5)
    for bad in ("linear", "wiggly:3", "logistic:x:1"):
        with pytest.raises(ValueError, match="schedule"):
            parse_schedule(bad)


def test_free_bits_floors_each_coordinate_kl():
    story, guide, corpus = nvdm_setup()
    batch = corpus["train"].batch(torch.arange(8))
    lam = 50.0  # above every coordinate's KL: the loss is -recon + B * K * lambda
    pyro.set_rng_seed(2)
    loss = FreeBitsELBO(lam).differentiable_loss(story.model, guide, batch)
    pyro.set_rng_seed(2)
    recon, kl = elbo_terms(story, guide, batch, 1)
    assert kl["z"].max() < lam * story.latent_dim
    assert torch.isclose(loss, -recon.sum() + 8 * story.latent_dim * lam, rtol=1e-5)
    # with lambda = 0 it is the usual mean-field ELBO
    pyro.set_rng_seed(2)
    loss0 = FreeBitsELBO(0.0).differentiable_loss(story.model, guide, batch)
    assert torch.isclose(loss0, -(recon - kl["z"]).sum(), rtol=1e-5)


# Pyro's own NaN warning precedes fabula's error; the error is what is under test.
@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_non_finite_loss_is_an_error_naming_the_step():
    story, guide, corpus = nvdm_setup()
    inf = Amortized(story, guide)
    with torch.no_grad():
        story.decoder.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match="step 1"):
        inf.step(corpus["train"].batch(torch.arange(4)))


def test_gradients_are_clipped_by_global_norm():
    story, guide, corpus = nvdm_setup()
    inf = Amortized(story, guide, clip_norm=1e-3, optimizer=torch.optim.SGD, optim_args={"lr": 0.0})
    inf.step(corpus["train"].batch(torch.arange(16)))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in inf.params if p.grad is not None]))
    assert norm <= 1e-3 * (1 + 1e-4)


def test_pyro_optimizers_become_one_torch_optimizer():
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = make_optimizer(pyro.optim.Adam({"lr": 0.05}), params, {})
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.05
    with pytest.raises(ValueError, match="callable"):
        make_optimizer(pyro.optim.Adam(lambda name, param: {"lr": 0.1}), params, {})
    assert isinstance(make_optimizer("sgd", params, {"lr": 0.1}), torch.optim.SGD)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("adagrad", params, {})
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(object, params, {})


def test_no_optimizer_is_built_that_nothing_steps():
    story, guide, corpus = nvdm_setup()
    data = corpus["train"]
    assert set(Amortized(story, guide).trainer.optimizers) == {"joint"}
    aggressive = Amortized(story, guide, updates=Aggressive(data, batch_size=8))
    assert set(aggressive.trainer.optimizers) == {"story", "guide"}
    fixed = StochasticVI(story, guide, Refinement(steps=1), learn_story=False)
    assert fixed.trainer.optimizers == {}
    with pytest.raises(ValueError, match="nothing to train"):
        fixed.step(data.batch(torch.arange(4)))


def test_learning_rate_schedule_is_part_of_the_resumable_state():
    story, guide, corpus = nvdm_setup()
    inf = Amortized(story, guide, optim_args={"lr": 0.1}, lr_decay=0.5, decay_after=1)
    inf.step(corpus["train"].batch(torch.arange(4)))
    assert inf.end_epoch()["lr"] == 0.1
    assert inf.end_epoch()["lr"] == 0.05
    again = Amortized(story, guide, optim_args={"lr": 0.1}, lr_decay=0.5, decay_after=1)
    again.load_state_dict(inf.state_dict())
    assert again.end_epoch()["lr"] == 0.025


def test_mean_field_elbo_is_the_value_and_gradient_of_pyros_trace_mean_field_elbo():
    story, guide, corpus = nvdm_setup()
    batch = corpus["train"].batch(torch.arange(16))
    params = guide.local_params(batch)
    losses, grads = [], []
    for objective in (MeanFieldELBO(), TraceMeanField_ELBO()):
        torch.manual_seed(3)
        loss = objective.differentiable_loss(story.model, lambda b: guide(b, params), batch)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, [*story.parameters(), params["loc"]], retain_graph=True))
    assert torch.allclose(losses[0], losses[1], rtol=1e-6)
    for mine, pyros in zip(*grads, strict=True):
        assert torch.allclose(mine, pyros, rtol=1e-5, atol=1e-6)


def test_mean_field_elbo_refuses_a_discrete_guide_site_and_a_latent_the_guide_lacks():
    def model(batch):
        with pyro.plate("data", 3):
            pyro.sample("c", pyro.distributions.Bernoulli(0.3))

    def guide(batch):
        with pyro.plate("data", 3):
            pyro.sample("c", pyro.distributions.Bernoulli(torch.tensor([0.2, 0.5, 0.9])))

    with pytest.raises(UsageError, match="guide site 'c' is not reparameterised; train with Trace_ELBO"):
        MeanFieldELBO().differentiable_loss(model, guide, None)
    with pytest.raises(UsageError, match="latent site 'c' has no site in the guide"):
        MeanFieldELBO().differentiable_loss(model, lambda batch: None, None)


def test_a_table_of_lambda_serves_the_data_it_was_fitted_on_and_refuses_others():
    story, guide, corpus = nvdm_setup()
    train, test = corpus["train"], corpus["test"]
    inference = NonAmortized(story, guide, len(train))
    with pytest.raises(UsageError, match="datum 0 has no fitted variational parameters.*StochasticVI"):
        evaluate(inference, train)  # nothing trained yet: the rows hold the prior, fitted to nothing
    inference.fit(train, epochs=1, batch_size=16, progress=False)
    assert math.isfinite(evaluate(inference, train, batch_size=7).summary()["nll"])
    # test documents share the training documents' indices, not their λ
    with pytest.raises(UsageError, match="is not the datum its row of λ was fitted to.*StochasticVI"):
        evaluate(inference, test)
    with pytest.raises(UsageError, match="is not the datum its row of λ was fitted to"):
        evaluate(inference, train.subset(torch.arange(len(train)).flip(0)))
    # the suggested remedy scores the test data with λ fitted to them from the prior
    refit = StochasticVI(story, guide, Refinement(steps=5, lr=0.1))
    assert math.isfinite(evaluate(refit, test).summary()["nll"])


def test_refinement_outside_training_warns_when_its_step_raises_the_negative_elbo():
    story, guide, corpus = nvdm_setup()
    test = corpus["test"]
    # clipped steps of 3 overshoot this small story's optimum of λ (steps of 0.5 descend)
    with pytest.warns(RefinementWarning, match=r"raised the mean negative ELBO .* lr=3.0"):
        evaluate(refined(Amortized(story, guide), Refinement(steps=5, lr=3.0)), test)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RefinementWarning)
        evaluate(refined(Amortized(story, guide), Refinement(steps=5, lr=0.5)), test)
