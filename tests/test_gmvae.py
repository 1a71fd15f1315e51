import math

import matplotlib.image
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Categorical, Normal, kl_divergence

from fabula.evaluation import evaluate
from fabula.evaluation.mixture import dispersion, mixture_diagnostics
from fabula.guides import MixtureGuide
from fabula.inference import Aggressive, Amortized, DispersedELBO, Refinement, SemiAmortized
from fabula.inference.annealing import annealed
from fabula.models import GMVAE
from fabula.plots import plot_component_means
from helpers import sentence_setup


def tiny(num_pairs=1, K=3):
    _, _, corpus = sentence_setup()
    story = GMVAE(30, K, 2, num_pairs=num_pairs, embed_dim=8, hidden_dim=12)
    guide = MixtureGuide(30, K, 2, num_pairs, 8, 12)
    return story, guide, corpus


def test_enumeration_gives_the_exact_sum_over_components():
    story, guide, corpus = tiny()
    batch = next(corpus["train"].batches(6))
    pyro.set_rng_seed(7)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(story.model, guide, batch)
    # brute force with the same draw of z: sum over c by hand
    pyro.set_rng_seed(7)
    params = guide.local_params(batch)
    loc, scale = params["loc"][:, 0], params["log_scale"][:, 0].exp()
    z = loc + scale * torch.randn_like(loc)
    q_c = params["c_logits"][:, 0].log_softmax(-1)  # [B, K]
    log_p_c = story.mixture_logits.log_softmax(-1)
    elbo = 0.0
    for c in range(3):
        component = story.component(0, torch.full((6,), c)).log_prob(z)
        elbo = elbo + q_c[:, c].exp() * (log_p_c[c] + component - q_c[:, c])
    logits = story.decoder(batch.decoder_inputs, z)
    log_px = -(
        torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
        * batch.mask
    ).sum(-1)
    log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    assert torch.isclose(loss, -(elbo + log_px - log_qz).sum(), rtol=1e-5)


def test_zero_dispersion_and_mi_weights_give_exactly_the_gmvae_loss():
    story, guide, corpus = tiny(num_pairs=2)
    batch = next(corpus["train"].batches(8))
    gmvae = Amortized(story, guide, objective=TraceEnum_ELBO(max_plate_nesting=1))
    dgmvae = Amortized(story, guide, objective=DispersedELBO(dispersion=0.0, mutual_information=0.0))
    losses = []
    for inference in (gmvae, dgmvae):
        pyro.set_rng_seed(1)
        losses.append(inference.loss(batch))
    assert torch.equal(losses[0], losses[1])
    pyro.set_rng_seed(1)
    assert not torch.equal(Amortized(story, guide, objective=DispersedELBO(1.0)).loss(batch), losses[0])


def _extra_terms(objective, story, guide, batch, params, beta=1.0):
    """The objective's terms beyond the mixture ELBO, per datum, with the guide at ``params``."""
    losses = []
    for elbo in (objective, TraceEnum_ELBO(max_plate_nesting=1)):
        pyro.set_rng_seed(5)
        model, q = annealed(story.model, beta), annealed(lambda b: guide(b, params), beta)
        losses.append(elbo.differentiable_loss(model, q, batch))
    return (losses[0] - losses[1]).item() / batch.size


def test_dispersion_and_mutual_information_by_hand():
    """The terms are read off the enumerated traces: q(c|x) from the guide's c site, the
    components from the prior of the z site that varies along c's enumeration dimension."""
    story, guide, corpus = tiny(num_pairs=1, K=2)
    with torch.no_grad():
        story.component_means.copy_(torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]]))
    batch = next(corpus["train"].batches(2))
    params = {k: v.detach() for k, v in guide.local_params(batch).items()}
    half = {**params, "c_logits": torch.zeros(2, 1, 2)}  # q(c|x) = (1/2, 1/2) for both data
    # unit scales: Var over c of mu_c / 2 = 1/2 per coordinate, 2 coordinates; I(x; c) = 0
    assert _extra_terms(DispersedELBO(1.0), story, guide, batch, half) == pytest.approx(-1.0, abs=1e-4)
    # the KL-annealing weight beta_t = 0.4 (the latent sites' scale) weights the term too
    value = _extra_terms(DispersedELBO(0.5), story, guide, batch, half, beta=0.4)
    assert value == pytest.approx(-0.5 * 0.4, abs=1e-4)
    onehot = {
        **params,
        "c_logits": torch.tensor([[[50.0, -50.0]], [[-50.0, 50.0]]]),
    }  # each sure of another c
    # no dispersion within q(c|x); I(x; c) = H(1/2, 1/2) - 0 = log 2
    value = _extra_terms(DispersedELBO(mutual_information=1.0), story, guide, batch, onehot)
    assert value == pytest.approx(-math.log(2), abs=1e-4)
    with pytest.raises(ValueError, match=r"dispersion weight must lie in \[0, 1\]"):
        DispersedELBO(dispersion=1.5)


def test_sa_vae_trains_the_mixture_story_and_refines_its_component_logits():
    """Refinement takes the setup's bound (TraceEnum_ELBO here), so SA-VAE steps c's logits too."""
    story, guide, corpus = tiny(num_pairs=2)
    inference = SemiAmortized(story, guide, Refinement(steps=2, lr=0.1), objective=DispersedELBO(0.5))
    batch = next(corpus["train"].batches(8))
    before = [p.detach().clone() for p in inference.params]
    assert math.isfinite(inference.step(batch)["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, inference.params, strict=True))
    with torch.no_grad():
        start, refined = guide.local_params(batch), inference.local_params(batch)
    assert not torch.allclose(start["c_logits"], refined["c_logits"])


def test_refinement_refuses_a_discrete_site_its_objective_does_not_sum_out():
    story, guide, corpus = tiny(num_pairs=1)
    inference = SemiAmortized(story, guide, Refinement(steps=1))  # TraceMeanField_ELBO
    with pytest.raises(ValueError, match="discrete"):
        inference.local_params(next(corpus["train"].batches(4)))


def test_aggressive_training_with_dispersion():
    story, guide, corpus = tiny(num_pairs=1)
    updates = Aggressive(corpus["valid"], batch_size=8, inner_steps=3, patience=1)
    inference = Amortized(story, guide, objective=DispersedELBO(0.8, 0.1), updates=updates)
    history = inference.fit(corpus["train"], epochs=1, batch_size=16, progress=False)
    assert math.isfinite(history[0]["loss"]) and history[0]["inner_steps"] >= 1
    assert "validation_mi" in history[0]


def test_dispersion_is_the_gap_between_the_kl_to_each_component_and_to_their_natural_mean():
    """E_rho KL(q || p_c) = KL(q || p with natural parameters E_rho eta_c) + dispersion (Shi et al.):
    the ELBO's z-term bounds the dispersion, and a common rescaling leaves it unchanged."""
    torch.manual_seed(0)
    means, log_scales = torch.randn(1, 3, 4), 0.5 * torch.randn(1, 3, 4)
    rho = torch.softmax(torch.randn(5, 1, 3), -1)
    q = Normal(torch.randn(5, 4), torch.rand(5, 4) + 0.5)
    gap = dispersion(rho, means, log_scales)
    kl_each = torch.stack(
        [kl_divergence(q, Normal(means[0, k], log_scales[0, k].exp())).sum(-1) for k in range(3)], -1
    )
    precision = (-2 * log_scales[0]).exp()
    mixed_precision = rho[:, 0] @ precision
    mixed = Normal((rho[:, 0] @ (means[0] * precision)) / mixed_precision, mixed_precision.rsqrt())
    expected = (rho[:, 0] * kl_each).sum(-1) - kl_divergence(q, mixed).sum(-1)
    assert torch.allclose(gap, expected, atol=1e-5) and (gap > 0).all()
    assert torch.allclose(dispersion(rho, 7 * means, log_scales + math.log(7)), gap, atol=1e-4)


def test_gmvae_trains_evaluates_and_generates_per_component():
    story, guide, corpus = tiny(num_pairs=2)
    inference = Amortized(story, guide, objective=DispersedELBO(dispersion=0.5, mutual_information=0.5))
    before = story.component_means.detach().clone()
    inference.fit(corpus["train"], epochs=1, batch_size=16, progress=False)
    assert not torch.equal(before, story.component_means)
    for estimator in ("elbo:4", "iw:4"):
        report = evaluate(inference, corpus["test"], estimator).summary()
        assert math.isfinite(report["nll"]) and report["kl"] >= 0
    z = story.generate_component(1, 2, 5)
    assert z.shape == (5, 4)
    assert story.latent_sites == ("c0", "z0", "c1", "z1")


def test_mixture_diagnostics_by_brute_force():
    torch.manual_seed(0)
    story, guide, corpus = tiny(num_pairs=2)
    with torch.no_grad():
        story.component_log_scales.normal_(0, 0.3)
    data = corpus["test"]
    diag = mixture_diagnostics(Amortized(story, guide), data, batch_size=5)
    with torch.no_grad():
        params = guide.local_params(data.batch(torch.arange(len(data))))
        pi = story.mixture_logits.softmax(-1)
        kl_c = kl_z = spread = vm = 0.0
        for m in range(2):
            rho = params["c_logits"][:, m].softmax(-1)
            q = Normal(params["loc"][:, m], params["log_scale"][:, m].exp())
            kl_c += kl_divergence(Categorical(rho), Categorical(pi)).mean()
            for k in range(3):
                p = Normal(story.component_means[m, k], story.component_log_scales[m, k].exp())
                kl_z += (rho[:, k] * kl_divergence(q, p).sum(-1)).mean()
            mu = story.component_means[m]  # [K, D]
            lam = (-2 * story.component_log_scales[m]).exp()  # natural parameters of each component
            log_partition = 0.5 * mu**2 * lam - 0.5 * lam.log()
            mixed = 0.5 * (rho @ (mu * lam)) ** 2 / (rho @ lam) - 0.5 * (rho @ lam).log()
            spread += ((rho @ log_partition) - mixed).sum(-1).mean()
            vm += (pi[:, None] * (mu - pi @ mu) ** 2).sum()
    assert diag["kl_c"] == pytest.approx(float(kl_c), rel=1e-5)
    assert diag["kl_z"] == pytest.approx(float(kl_z), rel=1e-5)
    assert diag["dispersion"] == pytest.approx(float(spread), rel=1e-5)
    assert diag["vm"] == pytest.approx(float(vm), rel=1e-5)
    usage = torch.tensor(diag["usage"])
    assert usage.shape == (2, 3) and torch.allclose(usage.sum(-1), torch.ones(2))
    assert all(1 <= u <= 3 for u in diag["used"]) and diag["mi_c"] >= 0


def test_collapsed_mixture_has_no_spread_and_no_information():
    story, guide, corpus = tiny()
    with torch.no_grad():
        story.component_means.copy_(torch.ones_like(story.component_means))
        guide.net[-1].weight.zero_()  # q(c | x) the same for every x
    diag = mixture_diagnostics(Amortized(story, guide), corpus["test"])
    assert diag["vm"] == pytest.approx(0, abs=1e-6) and diag["dispersion"] == pytest.approx(0, abs=1e-6)
    assert diag["mi_c"] == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="LSTMVAE is not a mixture story"):
        mixture_diagnostics(Amortized(*sentence_setup()[:2]), corpus["test"])


@pytest.mark.parametrize(("pairs", "grid"), [(3, (1, 3)), (7, (2, 5)), (20, (4, 5))])
def test_component_means_plot_wraps_pairs_into_rows(tmp_path, pairs, grid):
    history = [{"component_means": torch.randn(pairs, 4, 2).tolist()} for _ in range(3)]
    plot_component_means(history, tmp_path / "components.png", columns=5)
    height, width = matplotlib.image.imread(tmp_path / "components.png").shape[:2]
    rows, cols = grid
    assert (height, width) == (360 * rows, 400 * cols)  # 4 x 3.6 inches a panel at 100 dpi
