"""CGMH as an exact Metropolis-Hastings kernel over sentences: its transition matrix on an
enumerable sentence space, long chains against the target, the constraints in every state, and
the errors of bad input."""

import itertools
import json
import math

import pytest
import torch
from pyro import poutine
from scipy.stats import chi2

from fabula.cli import main
from fabula.data import load_dataset
from fabula.data.text import TextBatch, TextVocab
from fabula.diagnostics import to_arviz
from fabula.diagnostics.arviz import az
from fabula.errors import SettingsError, UsageError
from fabula.inference import MCMC
from fabula.inference.sequence_mh import DELETE, INSERT, REPLACE, SentenceState, SequenceMH, anneal
from fabula.models import NVDM, RNNLM
from fabula.models.constrained import NO_WORD, ConstrainedSentences, Constraints, padded

WORDS = (4, 5, 6)  # three words after <pad> <bos> <eos> <unk>
STATES = [s for n in range(1, 5) for s in itertools.product(WORDS, repeat=n)]  # length <= 4: 120


def tiny_lms(seed=0):
    """A forward and a backward LSTM LM over 3 words (float64, random weights)."""
    torch.manual_seed(seed)
    forward = RNNLM(7, 4, 5).double().eval()
    backward = RNNLM(7, 4, 5, reverse=True).double().eval()
    return forward, backward


def transition_matrix(kernel, story, keywords):
    """``(T, pi, support)`` over :data:`STATES`: the kernel's exact transition matrix, built from
    its own outcomes, proposal and acceptance probabilities of every move at every position."""
    n_states = len(STATES)
    index = {s: j for j, s in enumerate(STATES)}
    tokens, lengths = padded(STATES, 5), torch.tensor([len(s) for s in STATES])
    keywords = keywords.repeat(n_states, 1)
    log_pi = story.log_target(tokens.clamp(min=0), lengths, keywords, None)
    support = log_pi.isfinite()
    T = torch.zeros(n_states, n_states, dtype=torch.float64)
    for move, position in itertools.product((REPLACE, INSERT, DELETE), range(5)):
        moves = torch.full((n_states,), move)
        rows = support & (position < torch.where(moves == INSERT, lengths + 1, lengths))
        if not rows.any():
            continue
        state = SentenceState(tokens[rows], lengths[rows], log_pi[rows], keywords[rows], None)
        out = kernel.outcomes(story, state, moves[rows], torch.full((int(rows.sum()),), position))
        log_choice = kernel.log_moves[move] + kernel.position_log_probs(moves[rows], lengths[rows])
        prob = (log_choice[:, None] + out.log_q + out.log_alpha).exp()
        for r, row in enumerate(rows.nonzero().squeeze(1).tolist()):
            for o in prob[r].nonzero().squeeze(1).tolist():
                T[row, index[tuple(out.tokens[r, o, : int(out.lengths[r, o])].tolist())]] += prob[r, o]
    T += torch.diag(1 - T.sum(1))
    pi = torch.where(support, log_pi - log_pi[support].logsumexp(0), -torch.inf).exp()
    return T, pi, support


KERNELS = {
    "full vocabulary, forward LM": (dict(top_k=None), [], False),
    "top-2 of forward x backward, a keyword": (dict(top_k=2, backward=True), [4], False),
    "top-2 of the forward LM, ordered keywords": (dict(top_k=2), [5, 4], True),
}


@pytest.mark.parametrize("name", KERNELS)
@torch.no_grad()
def test_the_exact_kernel_leaves_pi_invariant_and_is_reversible(name):
    settings, keywords, ordered = KERNELS[name]
    forward, backward = tiny_lms()
    settings = {**settings, "backward": backward if settings.get("backward") else None}
    story = ConstrainedSentences(forward, max_length=4, ordered=ordered)
    T, pi, support = transition_matrix(SequenceMH(**settings), story, padded([keywords], 2))
    assert T.min() >= 0 and torch.allclose(T.sum(1), torch.ones(len(T), dtype=torch.float64), atol=1e-13)
    assert (pi @ T - pi).abs().max() < 1e-15
    flow = pi[:, None] * T
    assert (flow - flow.T).abs().max() < 1e-15
    moving = T[support][:, support].diag() < 1
    assert moving.sum() > 0.9 * support.sum()  # (top-k: a state whose words no context proposes may stay)
    if keywords:
        assert (T[support][:, ~support] == 0).all()  # no chain leaves the constraints


@torch.no_grad()
def test_the_released_rules_do_not_leave_pi_invariant():
    forward, backward = tiny_lms()
    story = ConstrainedSentences(forward, max_length=4)
    exact, _, _ = transition_matrix(SequenceMH(top_k=2, backward=backward), story, padded([[4]]))
    T, pi, _ = transition_matrix(
        SequenceMH(top_k=2, backward=backward, rules="released"), story, padded([[4]])
    )
    assert (pi @ exact - pi).abs().max() < 1e-15
    assert (pi @ T - pi).abs().max() > 1e-3  # stationarity fails, by far more than rounding
    flow = pi[:, None] * T
    assert (flow - flow.T).abs().max() > 1e-3


@torch.no_grad()
def test_chains_draw_from_pi_by_a_chi_square_test():
    """1,000 independent chains (batched) of 80 steps from one start: their final states against
    pi. The matrix bounds the chains' distance from pi after 80 steps far below what the test can
    see; the threshold is the chi-square 0.999 quantile (a false alarm 1 in 1,000). (The whole
    word set as candidates: a top-k chain keeps pi too, but may not reach every state.)"""
    forward, _ = tiny_lms()
    story = ConstrainedSentences(forward, max_length=4)
    kernel = SequenceMH(top_k=None)
    T, pi, _ = transition_matrix(kernel, story, padded([[4]]))
    start = torch.zeros(len(STATES), dtype=torch.float64)
    start[STATES.index((4,))] = 1
    assert (start @ torch.linalg.matrix_power(T, 80) - pi).abs().sum() < 1e-3
    constraints = Constraints(padded([[4]]), None, torch.arange(1))
    mcmc = MCMC(story, kernel=kernel, num_samples=1, warmup=79, num_chains=1000, seed=3, progress=False)
    chains = mcmc.run(constraints)
    x, lengths = chains.samples["x"][:, -1, 0], chains.samples["length"][:, -1, 0]
    counts = torch.zeros(len(STATES), dtype=torch.float64)
    for row, n in zip(x.tolist(), lengths.tolist(), strict=True):
        counts[STATES.index(tuple(row[:n]))] += 1
    expected = 1000 * pi
    big = expected >= 5  # the small cells pooled into one
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    wanted = torch.cat([expected[big], expected[~big].sum()[None]])
    statistic = float(((observed - wanted) ** 2 / wanted).sum())
    assert statistic < chi2.ppf(0.999, len(observed) - 1), statistic


def random_vocab(size=30):
    return TextVocab(["<pad>", "<bos>", "<eos>", "<unk>", *(f"w{i}" for i in range(size - 4))])


@pytest.mark.parametrize("ordered", [False, True])
@torch.no_grad()
def test_hard_constraints_hold_in_every_state_of_every_chain(ordered):
    torch.manual_seed(1)
    vocab = random_vocab()
    story = ConstrainedSentences(RNNLM(len(vocab), 8, 8).eval(), max_length=8, ordered=ordered)
    keyword_sets = [["w3", "w7"], ["w1"], ["w5", "w5", "w2"]]
    constraints = Constraints.from_words(vocab, keyword_sets)
    mcmc = MCMC(story, kernel=SequenceMH(top_k=5), num_samples=60, warmup=0, num_chains=3, progress=False)
    chains = mcmc.run(constraints)
    x, lengths = chains.samples["x"], chains.samples["length"]
    accepted = chains.stats["accepted"]
    assert accepted.any() and (lengths != lengths[:, :1]).any()  # the chains move, lengths too
    for c, d, b in itertools.product(*map(range, x.shape[:3])):
        words = [vocab.words[i] for i in x[c, d, b, : lengths[c, d, b]].tolist()]
        assert 1 <= len(words) <= 8 and (x[c, d, b, lengths[c, d, b] :] == NO_WORD).all()
        wanted = keyword_sets[b]
        if ordered:
            rest = iter(words)
            assert all(w in rest for w in wanted), (words, wanted)
        else:
            assert all(words.count(w) >= wanted.count(w) for w in wanted), (words, wanted)


@torch.no_grad()
def test_batched_candidate_scores_are_the_sentences_log_probabilities():
    torch.manual_seed(2)
    vocab = random_vocab()
    lm = RNNLM(len(vocab), 8, 8).eval()
    story = ConstrainedSentences(lm, max_length=10)
    tokens = padded([[5, 6, 7, 8], [9, 10], [11]], 11)
    state = SentenceState(
        tokens, torch.tensor([4, 2, 1]), torch.zeros(3, dtype=torch.float64), padded([[]] * 3, 1), None
    )
    out = SequenceMH(top_k=6).outcomes(
        story, state, torch.tensor([REPLACE, INSERT, INSERT]), torch.tensor([2, 0, 1])
    )
    for r in range(3):
        for o in range(6):
            n = int(out.lengths[r, o])
            sentence = out.tokens[r, o, :n].tolist()
            want = float(lm.log_prob(TextBatch.from_ids([sentence])))
            assert out.log_pi[r, o].item() == pytest.approx(want, abs=1e-4)


@torch.no_grad()
def test_log_pi_does_not_underflow_on_50_word_sentences():
    torch.manual_seed(3)
    vocab = random_vocab(200)
    story = ConstrainedSentences(RNNLM(len(vocab), 8, 8).eval(), max_length=60)
    sentence = torch.randint(4, 200, (1, 50))
    log_pi = story.log_target(sentence, torch.tensor([50]), padded([[int(sentence[0, 7])]]), None)
    assert log_pi.isfinite().all() and float(log_pi) < math.log(torch.finfo(torch.float32).tiny)
    constraints = Constraints(padded([[int(sentence[0, 7])]]), None, torch.arange(1))
    kernel = SequenceMH(top_k=20)
    chains = kernel.run(
        story, constraints, {"x": sentence}, num_samples=20, warmup=0, num_chains=2, seed=0, progress=False
    )
    assert chains.samples["log_pi"].isfinite().all() and chains.stats["accept_prob"].isfinite().all()
    assert (chains.samples["length"] >= 45).all()


@torch.no_grad()
def test_the_pyro_model_scores_what_log_target_scores():
    torch.manual_seed(4)
    vocab = random_vocab()
    story = ConstrainedSentences(RNNLM(len(vocab), 8, 8).eval(), max_length=6)
    constraints = Constraints.from_words(vocab, [["w2"], ["w4", "w5"]], [["w1", "w2"], ["w4", "w9", "w5"]])
    story.similarity_power = 2.0
    words = padded([[7, 6, 5], [9, 8, 13, 20]], 6)
    lengths = torch.tensor([3, 4])
    x = torch.cat([words.clamp(min=0), torch.zeros(2, 1, dtype=torch.long)], 1)
    x[torch.arange(2), lengths] = 2  # <eos>, then <pad>
    trace = poutine.trace(poutine.condition(story.model, data={"x": x})).get_trace(constraints)
    trace.compute_log_prob()
    total = trace.nodes["x"]["log_prob"].double() + trace.nodes["constraints"]["log_prob"]
    want = story.log_target(words.clamp(min=0), lengths, constraints.keywords, constraints.sources)
    assert torch.allclose(total, want, atol=1e-4) and want.isfinite().all()
    assert (story.log_similarity(words.clamp(min=0), words >= 0, constraints.sources) <= 0).all()


@torch.no_grad()
def test_to_arviz_gives_r_hat_and_ess_of_the_chains_statistics():
    torch.manual_seed(5)
    vocab = random_vocab()
    story = ConstrainedSentences(RNNLM(len(vocab), 8, 8).eval(), max_length=8)
    constraints = Constraints.from_words(vocab, [["w3"], ["w4", "w6"]])
    mcmc = MCMC(story, kernel=SequenceMH(top_k=5), num_samples=30, warmup=10, num_chains=4, progress=False)
    idata = to_arviz(mcmc, constraints)
    assert idata.posterior["log_pi"].shape == (4, 30, 2)
    assert set(idata.sample_stats) == {"move", "accepted", "accept_prob"}
    rhat, ess = az.rhat(idata)["log_pi"].values, az.ess(idata)["log_pi"].values
    assert rhat.shape == (2,) and ess.shape == (2,) and (ess > 0).all()


@torch.no_grad()
def test_search_returns_the_best_sentence_it_visits_within_the_constraints():
    torch.manual_seed(6)
    vocab = random_vocab()
    story = ConstrainedSentences(RNNLM(len(vocab), 8, 8).eval(), max_length=8)
    constraints = Constraints.from_words(vocab, [["w3", "w9"]])
    kernel = SequenceMH(top_k=5)
    tokens, log_pi = anneal(kernel, story, constraints, steps=40, num_chains=3, seed=0)
    n = int((tokens[0] != NO_WORD).sum())
    assert float(log_pi[0]) == pytest.approx(
        float(story.log_target(tokens[:, :n].clamp(min=0), torch.tensor([n]), constraints.keywords, None)),
        abs=1e-4,
    )
    start = story.log_target(padded([[7, 13]]), torch.tensor([2]), constraints.keywords, None)
    assert float(log_pi[0]) >= float(start)  # at least as good as the start it left


def test_bad_input_is_refused_naming_the_problem():
    vocab = random_vocab()
    with pytest.raises(SettingsError, match="keyword 'zebra' is not a word"):
        Constraints.from_words(vocab, [["w1", "zebra"]])
    with pytest.raises(SettingsError, match="keyword '<eos>' is not a word"):
        Constraints.from_words(vocab, [["<eos>"]])
    with pytest.raises(SettingsError, match="empty keyword set"):
        Constraints.from_words(vocab, [[]])
    with pytest.raises(UsageError, match="NVDM is not one"):
        ConstrainedSentences(NVDM(len(vocab), 2))
    with pytest.raises(UsageError, match="left to right"):
        ConstrainedSentences(RNNLM(len(vocab), 4, 4, reverse=True))
    with pytest.raises(UsageError, match="trained with --reverse"):
        SequenceMH(backward=RNNLM(len(vocab), 4, 4))
    with pytest.raises(SettingsError, match="sum to 1"):
        SequenceMH(moves=(0.5, 0.5, 0.5))
    story = ConstrainedSentences(RNNLM(len(vocab), 4, 4), max_length=2)
    with pytest.raises(UsageError, match="outside the target's support"):  # 3 keywords, 2 words at most
        SequenceMH().start(story, Constraints.from_words(vocab, [["w1", "w2", "w3"]]), None, 1)


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory, one_sentence_corpus):
    """Tiny forward and backward rnnlm runs, and an nvdm run, on the synthetic corpora."""
    root = tmp_path_factory.mktemp("cgmh")
    tiny = ["--epochs", "1", "--batch-size", "256", "--quiet", "--no-reference"]
    runs = {}
    for name, extra in (("forward", []), ("backward", ["--reverse"])):
        runs[name] = str(root / name)
        argv = ["train", "rnnlm", "--out", runs[name], "--embed-dim", "8", "--hidden-dim", "8", *tiny, *extra]
        assert main(argv) == 0
    runs["nvdm"] = str(root / "nvdm")
    assert main(["train", "nvdm", "--out", runs["nvdm"], "--latent-dim", "2", "--hidden", "8", *tiny]) == 0
    return runs


def test_cli_samples_keyword_sentences_as_json(lm_runs, capsys):
    argv = [
        *(
            "cgmh",
            lm_runs["forward"],
            "--backward",
            lm_runs["backward"],
            "--keywords",
            "w0704 w0312",
            "w0288",
        ),
        *(
            "--chains",
            "2",
            "--steps",
            "12",
            "--burn-in",
            "4",
            "--candidates",
            "10",
            "--max-length",
            "8",
            "--json",
        ),
    ]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["set"], r["chain"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in records:
        words = r["sentence"].split()
        assert {"w0704", "w0312"} <= set(words) if r["set"] == 0 else "w0288" in words
        assert math.isfinite(r["log_pi"]) and r["length"] == len(words)
        assert set(r["acceptance"]) == {"replace", "insert", "delete"}
    assert main([*argv[:-1], "--search"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_cli_refuses_bad_runs_and_words_in_one_line(lm_runs, capsys):
    cases = [
        (["cgmh", lm_runs["nvdm"], "--keywords", "w0001"], "an rnnlm run"),
        (["cgmh", lm_runs["forward"], "--keywords", "nonword"], "keyword 'nonword' is not a word"),
        (["cgmh", lm_runs["backward"], "--keywords", "w0001"], "must be trained left to right"),
        (["cgmh", lm_runs["forward"], "--backward", lm_runs["forward"], "--keywords", "w0001"], "--reverse"),
        (["cgmh", lm_runs["forward"]], "give --keywords, --paraphrase"),
        (["cgmh", lm_runs["forward"], "--keywords", "w0001", "--steps", "5", "--burn-in", "5"], "--burn-in"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


@pytest.mark.integration
def test_quora_language_model_lines_are_disjoint_from_the_evaluated_pairs(shared_data):
    quora = shared_data / "cgmh" / "quora"
    if not (quora / "test.txt").is_file():
        pytest.skip(f"Quora questions not found at {quora}")
    splits = load_dataset("quora", shared_data)
    assert [len(splits[s]) for s in ("test", "test_references", "valid")] == [1000, 1000, 1000]
    lines = (quora / "test.txt").read_text().splitlines()
    refs = (quora / "ref.txt").read_text().splitlines()
    evaluated = set(lines[:1000]) | set(refs[:1000]) | set(lines[-1000:])
    vocab = splits["train"].vocab
    train = {
        " ".join(vocab.words[i] for i in splits["train"].sentence(j)) for j in range(len(splits["train"]))
    }
    # lines of known words only compare exactly (others read <unk>)
    known = {line for line in evaluated if all(w in vocab.index for w in line.split())}
    assert len(known) > 500 and not known & train
    assert len(splits["train"]) > 35_000


@torch.no_grad()
def test_a_reverse_lm_scores_sentences_read_right_to_left(lm_runs):
    from fabula.models.rnnlm import reversed_sentences
    from fabula.run import load_run

    torch.manual_seed(7)
    backward = RNNLM(30, 8, 8, reverse=True).eval()
    forward_reader = RNNLM(30, 8, 8).eval()
    forward_reader.load_state_dict(backward.state_dict())
    batch = TextBatch.from_ids([[5, 6, 7], [8, 9], [10, 11, 12, 13]])
    flipped = TextBatch.from_ids([[7, 6, 5], [9, 8], [13, 12, 11, 10]])
    assert torch.equal(reversed_sentences(batch).tokens, flipped.tokens)
    assert torch.allclose(backward.log_prob(batch), forward_reader.log_prob(flipped))
    assert load_run(lm_runs["backward"]).inference.story.reverse  # the run's settings say so
    assert not load_run(lm_runs["forward"]).inference.story.reverse


def test_sample_prints_a_backward_lms_sentences_in_reading_order(lm_runs, capsys):
    from fabula.generation import decode
    from fabula.run import load_run

    assert main(["sample", lm_runs["backward"], "--n", "2", "--decode", "greedy"]) == 0
    printed = capsys.readouterr().out.splitlines()
    run = load_run(lm_runs["backward"])
    vocab = run.splits["train"].vocab
    drawn = [vocab.decode(ids) for ids in decode(run.inference.story.decoder, None, 2, "greedy")]
    assert printed == [" ".join(words[::-1]) for words in drawn]
    assert any(len(words) > 1 for words in drawn)  # the order is visible
