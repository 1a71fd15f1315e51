"""Property-based fuzzing of every public corpus reader (the inputs are drawn by
``tests/reader_inputs.py``): whatever the file, a reader returns a consistent corpus or raises a
``DataFormatError`` naming the file and, where one is at fault, the line.

The default run reads :data:`EXAMPLES` generated inputs per reader with hypothesis derandomized
(the same inputs each run); ``pytest -m fuzz_long`` reads :data:`LONG_EXAMPLES` fresh ones.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reader_inputs import READERS, base_case, draw_case, judge

EXAMPLES = 2000
LONG_EXAMPLES = 50_000


def fuzz(name, folder, examples, derandomize):
    reader, kinds = READERS[name], set()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written into the checkout
        derandomize=derandomize,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.randoms(use_true_random=False))
    def read_a_mutated_input(rng):
        verdict = judge(reader, draw_case(reader, rng), folder)
        assert verdict.kind in ("accepted", "error"), f"{verdict.kind}:\n{verdict.detail}"
        kinds.add(verdict.kind)

    read_a_mutated_input()
    assert kinds == {"accepted", "error"}  # the mutations neither always break nor never break a file


@pytest.mark.parametrize("name", sorted(READERS))
def test_the_unmutated_inputs_are_accepted(name, tmp_path):
    for seed in range(50):
        verdict = judge(READERS[name], base_case(READERS[name], seed), tmp_path)
        assert verdict.kind == "accepted", verdict.detail


@pytest.mark.parametrize("name", sorted(READERS))
def test_every_outcome_is_a_consistent_corpus_or_a_clean_error(name, tmp_path):
    fuzz(name, tmp_path, EXAMPLES, derandomize=True)


@pytest.mark.fuzz_long
@pytest.mark.parametrize("name", sorted(READERS))
def test_every_outcome_is_a_consistent_corpus_or_a_clean_error_long(name, tmp_path):
    fuzz(name, tmp_path, LONG_EXAMPLES, derandomize=False)
