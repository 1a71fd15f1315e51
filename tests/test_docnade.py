"""docNADE against hand-computed probabilities: each order of a document, normalisation over
every sequence, deterministic evaluation, training and the command line."""

import itertools
import json
import math
from collections import Counter

import pytest
import torch
from pyro import poutine

from fabula.cli import main
from fabula.data import BagOfWords, Vocab, synthetic_nvdm_corpus
from fabula.evaluation import evaluate
from fabula.inference import Setup, Training, build
from fabula.models import DocNADE
from fabula.run.config import InferenceSettings, objective_of
from fabula.run.stories import recipe


def random_docnade(vocab_size=5, hidden=3, activation="sigmoid", orders=1, seed=0):
    story = DocNADE(vocab_size, hidden, activation, orders)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in story.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return story.requires_grad_(False)


def by_hand(story, sequence) -> float:
    """log p(v_1..v_D) by a plain loop over positions: h_i = g(c + sum_{k<i} W[:, v_k]),
    p(v_i = w | v_<i) = softmax(b + U h_i)_w."""
    W, c = story.encoder.weight.tolist(), story.encoder.bias.tolist()
    U, b = story.decoder.weight.tolist(), story.decoder.bias.tolist()
    g = {"sigmoid": lambda a: 1 / (1 + math.exp(-a)), "tanh": math.tanh}[story.activation]
    pre, total = list(c), 0.0
    for v in sequence:
        h = [g(a) for a in pre]
        logits = [b[w] + sum(U[w][j] * h[j] for j in range(len(h))) for w in range(len(b))]
        total += logits[v] - math.log(sum(math.exp(x) for x in logits))
        pre = [a + W[j][v] for j, a in enumerate(pre)]
    return total


def corpus(counts):
    return BagOfWords.from_dense(torch.tensor(counts, dtype=torch.float), Vocab([f"w{i}" for i in range(5)]))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_every_order_of_a_document_scores_as_the_loop_by_hand(activation):
    story = random_docnade(activation=activation)
    orders = sorted(set(itertools.permutations([0, 0, 1, 3])))  # the 12 distinct orders of a, a, b, c
    ours = story.sequence_log_prob(torch.tensor(orders), torch.tensor(4)).double()
    theirs = torch.tensor([by_hand(story, o) for o in orders], dtype=torch.float64)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert math.isclose(float(ours.mean()), float(theirs.mean()), abs_tol=1e-5)

    # documents of different lengths in one call, padding read as nothing
    tokens, lengths = torch.tensor([[2, 4, 4, 0], [1, 0, 0, 0], [3, 3, 0, 0]]), torch.tensor([3, 1, 2])
    ragged = story.sequence_log_prob(tokens, lengths)
    assert torch.allclose(
        ragged.double(),
        torch.tensor(
            [by_hand(story, [2, 4, 4]), by_hand(story, [1]), by_hand(story, [3, 3])], dtype=torch.float64
        ),
        atol=1e-5,
    )

    # the story's figure is the mean over the orders it read, each a permutation of the tokens
    story.orders = 7
    batch = corpus([[2, 1, 0, 1, 0]]).batch(torch.tensor([0]))
    read, _ = story.likelihood(batch, fixed=True).ordered_tokens(batch.counts)
    assert read.shape == (7, 1, 4) and all(sorted(o) == [0, 0, 1, 3] for o in read[:, 0].tolist())
    expected = sum(by_hand(story, o) for o in read[:, 0].tolist()) / 7
    assert math.isclose(float(story.log_prob(batch)), expected, abs_tol=1e-5)

    # with many orders, near the uniform mean over the 12 distinct orders
    story.orders = 3000
    spread = float(theirs.std()) / math.sqrt(story.orders)
    assert abs(float(story.log_prob(batch)) - float(theirs.mean())) < 5 * spread


def test_sequences_sum_to_one_and_draws_follow_them():
    story = random_docnade(vocab_size=3, seed=1)
    for length in (1, 2, 3):
        sequences = torch.tensor(list(itertools.product(range(3), repeat=length)))
        total = story.sequence_log_prob(sequences, torch.tensor(length)).double().exp().sum()
        assert math.isclose(float(total), 1.0, abs_tol=1e-5)

    # documents of 2 tokens: the probability of each count vector sums its sequences
    pairs = torch.tensor(list(itertools.product(range(3), repeat=2)))
    p_pair = story.sequence_log_prob(pairs, torch.tensor(2)).exp().tolist()
    expected = Counter()
    for (a, b), p in zip(pairs.tolist(), p_pair, strict=True):
        expected[tuple(sorted((a, b)))] += p
    torch.manual_seed(0)
    n = 20000
    draws = story.draw(torch.full((n,), 2))
    assert torch.equal(draws.sum(-1), torch.full((n,), 2.0))
    seen = Counter(tuple(i for i, c in enumerate(row) for _ in range(int(c))) for row in draws.tolist())
    for pair, p in expected.items():
        assert abs(seen[pair] / n - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_the_observation_site_is_the_likelihood_and_draws_documents_unconditioned():
    story = random_docnade()
    batch = corpus([[2, 1, 0, 1, 0], [0, 0, 3, 1, 1], [1, 0, 0, 0, 0]]).batch(torch.arange(3))
    story.eval()
    trace = poutine.trace(story.model).get_trace(batch)
    trace.compute_log_prob()
    assert torch.allclose(trace.nodes["x"]["log_prob"], story.log_prob(batch))
    drawn = poutine.trace(poutine.uncondition(story.model)).get_trace(batch).nodes["x"]["value"]
    assert drawn.shape == batch.counts.shape and torch.equal(drawn.sum(-1), batch.lengths)
    story.train()  # one fresh random order per document per trace
    figures = {float(poutine.trace(story.model).get_trace(batch).log_prob_sum()) for _ in range(8)}
    assert len(figures) > 1


def tiny_run(orders=1, **settings):
    splits, _ = synthetic_nvdm_corpus(num_train=48, num_test=16, vocab_size=20, latent_dim=2, mean_length=15)
    r = recipe("docnade")
    s = r.settings(hidden=6, orders=orders, **settings)
    torch.manual_seed(0)
    story, guide = r.build(s, splits["train"])
    objective = objective_of("docnade", s, InferenceSettings(), guide)
    setup = Setup(story, guide, objective, Training(optim_args={"lr": 0.05}), data=splits, batch_size=16)
    return build(r.defaults.get("inference", {}).get("inference", "vae"), setup), splits


def test_evaluation_is_exact_deterministic_and_averages_the_stated_orders():
    inference, splits = tiny_run()
    test = splits["test"]
    first, again = evaluate(inference, test, "exact"), evaluate(inference, test, "exact")
    assert torch.equal(first.nll, again.nll)
    # a document's figure does not depend on the batch it is scored in
    with torch.no_grad():
        alone = inference.story.log_prob(test.batch(torch.tensor([5])))
    assert math.isclose(float(alone), -float(first.nll[5]), rel_tol=1e-6)
    # the bound of an empty guide in evaluation mode is the same figure
    assert torch.allclose(evaluate(inference, test, "elbo").nll, first.nll)
    assert evaluate(inference, test).estimator == "exact"

    inference.story.orders = 4
    four = evaluate(inference, test, "exact").nll
    assert not torch.allclose(four, first.nll)
    batch = test.batch(torch.arange(len(test)))
    read, lengths = inference.story.likelihood(batch, fixed=True).ordered_tokens(batch.counts)
    with torch.no_grad():
        per_order = inference.story.sequence_log_prob(read, lengths.expand(read.shape[:-1]))
    assert torch.allclose(-per_order.mean(0), four, atol=1e-4)
    assert torch.allclose(-per_order[0], first.nll, atol=1e-4)  # its first order is the one of orders=1


def test_training_with_the_runs_default_kind_raises_the_exact_likelihood():
    inference, splits = tiny_run()
    train = splits["train"]
    before = evaluate(inference, train, "exact").nll.mean()
    history = inference.fit(train, 3, 16, 0, progress=False)
    after = evaluate(inference, train, "exact").nll.mean()
    assert history[-1]["loss"] < history[0]["loss"] and after < before - 1.0


def test_topics_are_the_hidden_units_largest_input_weights():
    story = random_docnade()
    words = [f"w{i}" for i in range(5)]
    top = story.topic_words(2)
    assert top.shape == (3, 2) and torch.equal(
        top, story.encoder.weight.argsort(dim=1, descending=True)[:, :2]
    )
    assert story.topics(words, 2) == [[words[i] for i in row] for row in top.tolist()]


def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "docs"
    data.mkdir()
    topics = ["apple pear plum fig", "car bus train bike", "red blue green pink"]
    for split, n in (("train", 40), ("test", 10)):
        lines = [" ".join(topics[i % 3].split() * (1 + i % 4)) for i in range(n)]
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    run = str(tmp_path / "run")
    args = [
        "train",
        "docnade",
        "--data",
        str(data),
        "--out",
        run,
        "--epochs",
        "2",
        "--hidden",
        "4",
        "--quiet",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["estimator"] == "exact" and report["num_data"] == 10 and report["num_tokens"] > 0
    assert main(["evaluate", run, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nll"] == report["nll"]
    assert main(["topics", run, "--k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 4
