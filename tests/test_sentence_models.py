import math

import pyro
import pytest
import torch
from pyro import poutine

from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.data.text import BOS, EOS, PAD, UNK, TextBatch, TextCorpus, TextVocab
from fabula.distributions import MaskedSequenceCategorical
from fabula.errors import UsageError
from fabula.evaluation import elbo_terms, evaluate, iw_log_likelihood, mutual_information
from fabula.generation import beam_search, categorical, greedy, homotopy, sample
from fabula.guides import EmptyGuide, SentenceGuide
from fabula.inference import Aggressive, Amortized
from fabula.inference.word_dropout import word_dropout
from fabula.models import LSTMVAE, RNNLM
from fabula.traces import trace_guide


def small_vae(V=30, encoder="lstm"):
    return LSTMVAE(V, latent_dim=4, embed_dim=8, hidden_dim=12), SentenceGuide(V, 4, 8, 12, encoder)


def log_joint(story, batch, z):
    trace = poutine.trace(poutine.condition(story.model, data={"z": z} if z is not None else {})).get_trace(
        batch
    )
    trace.compute_log_prob()
    return trace.nodes["x"]["log_prob"]


@pytest.mark.parametrize("latent", [False, True])
def test_padding_contributes_exactly_nothing(latent):
    torch.manual_seed(0)
    story = small_vae()[0] if latent else RNNLM(30, 8, 12)
    short, long_ = [5, 6], [7, 8, 9, 10, 11, 12]
    z = torch.randn(2, 4) if latent else None
    together = log_joint(story, TextBatch.from_ids([short, long_]), z)
    alone = log_joint(story, TextBatch.from_ids([short]), z[:1] if latent else None)
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    # and the padded logits do not matter: garbage there changes nothing
    logits = torch.randn(1, 5, 30)
    mask = torch.tensor([[True, True, True, False, False]])
    value = torch.tensor([[3, 4, 2, 0, 0]])
    garbage = logits.clone()
    garbage[0, 3:] = 1e4
    assert torch.equal(
        MaskedSequenceCategorical(logits, mask).log_prob(value),
        MaskedSequenceCategorical(garbage, mask).log_prob(value),
    )


def test_word_dropout_changes_decoder_inputs_only_and_never_evaluation():
    batch = TextBatch.from_ids([[5, 6, 7], [8]])
    dropped = word_dropout(batch, 1.0)
    assert dropped.decoder_inputs.tolist() == [[BOS, UNK, UNK, UNK], [BOS, UNK, EOS, PAD]]
    assert torch.equal(dropped.targets, batch.targets) and torch.equal(dropped.tokens, batch.tokens)
    assert torch.equal(word_dropout(batch, 0.0).decoder_inputs, batch.decoder_inputs)
    splits, _ = synthetic_sentence_corpus(num_train=20, num_valid=4, num_test=8, vocab_size=30)
    story, guide = small_vae()
    reports = []
    for rate in (0.0, 0.9):
        torch.manual_seed(1)
        reports.append(evaluate(Amortized(story, guide, word_dropout=rate), splits["test"], "elbo:2").nll)
    assert torch.equal(reports[0], reports[1])


def test_decoder_dropout_is_off_in_evaluation_and_the_training_mode_comes_back():
    splits, _ = synthetic_sentence_corpus(num_train=20, num_valid=4, num_test=8, vocab_size=30)
    story = RNNLM(30, 8, 12, dropout=0.5)
    inference = Amortized(story, EmptyGuide())
    assert story.training
    with torch.no_grad():  # the exact NLL of an RNNLM without dropout, computed by hand
        batch = splits["test"].batch(torch.arange(len(splits["test"])))
        story.eval()
        logits = story.decoder(batch.decoder_inputs)
        story.train()
        logp = logits.log_softmax(-1).gather(-1, batch.targets[..., None])[..., 0]
        expected = -(logp * batch.mask).sum(-1)
    for seed in (1, 2):  # dropout on would make these differ from each other and from expected
        torch.manual_seed(seed)
        report = evaluate(inference, splits["test"], "elbo", batch_size=len(splits["test"]))
        assert torch.allclose(report.nll.sort().values, expected.sort().values, atol=1e-4)
    assert story.training and story.decoder.dropout.training


def test_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well():
    torch.manual_seed(0)
    story, _ = small_vae(V=15)
    with torch.no_grad():  # large random weights: peaked, varied next-word distributions
        for p in story.decoder.parameters():
            p.normal_(0, 1.0)
    z = torch.randn(8, 4)
    g = greedy(story.decoder, z, max_length=12)
    assert beam_search(story.decoder, z, beam_size=1, max_length=12) == g
    b = beam_search(story.decoder, z, beam_size=6, max_length=12)
    finished = [i for i in range(8) if len(b[i]) < 12 and len(g[i]) < 12]
    assert finished
    score = lambda sents: log_joint(story, TextBatch.from_ids(sents), z[finished])  # noqa: E731
    assert (score([b[i] for i in finished]) >= score([g[i] for i in finished]) - 1e-4).all()


def test_homotopy_ends_at_both_codes():
    a, b = torch.zeros(3), torch.ones(3)
    path = homotopy(a, b, 5)
    assert (
        torch.equal(path[0], a)
        and torch.equal(path[-1], b)
        and torch.allclose(path[2], torch.full((3,), 0.5))
    )


@pytest.mark.parametrize("encoder", ["lstm", "bow"])
def test_iw_bound_exceeds_the_elbo_for_sentences(encoder):
    splits, _ = synthetic_sentence_corpus(num_train=10, num_valid=2, num_test=64, vocab_size=30)
    story, guide = small_vae(encoder=encoder)
    batch = splits["test"].batch(torch.arange(64))
    with torch.no_grad():
        recon, kl = elbo_terms(story, guide, batch, 50)
        iw = iw_log_likelihood(story, guide, batch, 50)
    assert (iw.mean() > (recon - kl["z"]).mean()).item()


def test_a_tiny_language_model_samples_its_corpus_frequencies():
    vocab = TextVocab.build([["a", "b"]])
    a, b = vocab.index["a"], vocab.index["b"]
    sentences = [[a, b]] * 70 + [[b, a, a]] * 30
    corpus = TextCorpus(sentences, vocab)
    torch.manual_seed(0)
    story = RNNLM(len(vocab), 8, 16)
    inference = Amortized(story, EmptyGuide(), optim_args={"lr": 0.05})
    inference.fit(corpus, epochs=60, batch_size=50, progress=False)
    torch.manual_seed(1)
    drawn = sample(story.decoder, num=2000, max_length=6)
    freq_ab = sum(s == [a, b] for s in drawn) / 2000
    freq_baa = sum(s == [b, a, a] for s in drawn) / 2000
    # binomial standard error at n=2000 is about 0.01; allow 4 of them
    assert abs(freq_ab - 0.7) < 0.04 and abs(freq_baa - 0.3) < 0.04


def test_mutual_information_is_zero_for_one_shared_q_and_log_b_for_separated_qs():
    B = 400

    def guide(means):
        def fn(batch, params=None):
            with pyro.plate("data", B, dim=-1):
                pyro.sample("z", pyro.distributions.Normal(means, 1.0).to_event(1))

        return fn

    batch = TextBatch.from_ids([[5]] * B)
    torch.manual_seed(0)
    shared = mutual_information(trace_guide(guide(torch.zeros(B, 2)), batch), ("z",))
    apart = mutual_information(
        trace_guide(guide(torch.arange(B).float()[:, None].expand(B, 2) * 100), batch), ("z",)
    )
    # MI = mean_b(-H[q_b] - log q_b(z_b)) + (log B or 0): the first term has mean 0 and, for a
    # 2-d standard normal, standard deviation 1 per datum, so 4 / sqrt(B) bounds its noise
    assert abs(float(shared)) < 4 / math.sqrt(B)
    assert float(apart) == pytest.approx(math.log(B), abs=4 / math.sqrt(B))


def test_aggressive_training_updates_the_encoder_first_and_stops_when_mi_stalls():
    splits, _ = synthetic_sentence_corpus(num_train=64, num_valid=16, num_test=8, vocab_size=30)
    story, guide = small_vae()
    updates = Aggressive(splits["valid"], batch_size=16, inner_steps=10, patience=3)
    inference = Amortized(story, guide, updates=updates)
    with pytest.raises(UsageError, match="call begin"):
        inference.step(next(splits["train"].batches(16)))
    inference.begin(splits["train"])
    decoder_before = story.decoder.out.weight.detach().clone()
    metrics = inference.step(next(splits["train"].batches(16, shuffle=True)))
    assert metrics["inner_steps"] >= 3 and not torch.equal(decoder_before, story.decoder.out.weight)
    first = inference.end_epoch()
    assert first["aggressive"] == 1.0
    updates.best_mi = first["validation_mi"] + 10.0  # MI can no longer rise
    assert inference.end_epoch()["aggressive"] == 0.0
    assert inference.step(next(splits["train"].batches(16)))["inner_steps"] == 0.0


def test_the_inverse_cdf_draw_follows_its_distribution_and_never_draws_a_zero():
    probabilities = torch.tensor([0.0, 0.1, 0.0, 0.2, 0.7, 0.0])
    torch.manual_seed(0)
    drawn = categorical(probabilities.log().expand(200_000, -1))
    frequencies = torch.bincount(drawn, minlength=6).float() / 200_000
    assert (frequencies[probabilities == 0] == 0).all()
    # binomial standard error of the largest frequency is about 0.001
    assert torch.allclose(frequencies, probabilities, atol=0.005)
    scaled = categorical(torch.tensor([[2.0, 2.0 + math.log(3.0)]]).expand(100_000, -1))
    assert abs(scaled.float().mean().item() - 0.75) < 0.01  # unnormalised logits: softmax taken
