import torch
from torch.distributions import Multinomial

from fabula.distributions import BagOfWordsMultinomial


def test_log_prob_equals_torch_multinomial():
    logits = torch.randn(4, 6)
    counts = torch.tensor(
        [[1, 0, 2, 0, 0, 3], [0, 0, 0, 1, 0, 0], [5, 1, 1, 1, 1, 1], [0, 2, 0, 0, 2, 0]]
    ).float()
    want = torch.stack(
        [Multinomial(int(c.sum()), logits=lg).log_prob(c) for lg, c in zip(logits, counts, strict=True)]
    )
    d = BagOfWordsMultinomial(logits)
    assert torch.allclose(d.log_prob(counts), want, atol=1e-5)
    coef = torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)
    assert torch.allclose(BagOfWordsMultinomial(logits, log_coef=coef).log_prob(counts), want, atol=1e-5)


def test_log_prob_broadcasts_over_an_outer_sample_dimension():
    logits = torch.randn(3, 2, 5)
    counts = torch.tensor([[1.0, 0, 2, 0, 1], [0, 4, 0, 0, 0]])
    out = BagOfWordsMultinomial(logits).log_prob(counts)
    assert out.shape == (3, 2)
    assert torch.allclose(out[1], BagOfWordsMultinomial(logits[1]).log_prob(counts))


def test_sample_has_the_requested_lengths_and_frequencies():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.2])
    d = BagOfWordsMultinomial(probs.log().expand(2, 3), total_count=torch.tensor([20000, 7]))
    x = d.sample()
    assert x.sum(-1).tolist() == [20000, 7]
    # binomial standard error of each frequency at N = 20000 is below 0.0036; allow 4 of them
    assert torch.allclose(x[0] / 20000, probs, atol=4 * 0.0036)
