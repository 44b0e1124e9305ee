import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rls3_jax.prompts import TERMS
from rls3_jax.scoring import clip_reward, paligemma_reward, parse_terms, rubric_score


@pytest.mark.parametrize(
    "text,terms",
    [
        ("It is above the bowl.", {"above"}),
        ("over the plate", {"above"}),
        ("on top of the table", {"above"}),
        ("below", {"below"}),
        ("under it", {"below"}),
        ("beneath the shelf", {"below"}),
        ("underneath", {"below"}),
        ("behind the cup", {"behind"}),
        ("in back of the cup", {"behind"}),
        ("in front of the lamp", {"in front"}),
        ("to the left of the pot", {"left"}),
        ("left of the pot", {"left"}),
        ("to the right of it", {"right"}),
        ("right of it", {"right"}),
        ("The small pot is Above, BEHIND and to the left of the yellow bowl.", {"above", "behind", "left"}),
        ("I don't know.", set()),
        ("The brightest thing", set()),  # 'right' only as a whole word
    ],
)
def test_parse_terms(text, terms):
    assert parse_terms(text) == terms


@pytest.mark.parametrize(
    "truth,answer,score",
    [
        (("above", "behind", "left"), "above, behind and to the left of", 5),
        (("above", "behind", "left"), "above and behind", 4),  # 2 of 3
        (("above", "behind", "left"), "to the left of", 2),  # 1 of 3
        (("above", "behind", "left"), "nowhere", 1),
        (("below", "in front"), "below and in front of", 5),
        (("below", "in front"), "below", 3),  # 1 of 2
        (("below", "in front"), "in front of", 3),
        (("below", "in front"), "to the left", 1),
        (("behind",), "behind", 5),
        (("behind",), "to the left", 1),
        # opposite-term penalty
        (("below", "in front"), "below and behind", 2),  # 1 of 2, opposite of 'in front'
        (("above", "behind", "left"), "above, behind and to the right of", 3),  # 2 of 3, opposite
        (("behind",), "in front of", 1),  # floor
        # too-many-terms penalty
        (("behind",), "to the right and behind", 4),
        (("below", "in front"), "below, in front and to the left", 4),
        # both penalties
        (("above", "left"), "above, below and to the right", 1),  # 1 of 2 -> 3, opposite -1, extra -1
        (("above", "behind", "left"), "above, behind, left and right", 3),  # 5 -1 -1
    ],
)
def test_rubric_table_and_penalties(truth, answer, score):
    assert rubric_score(truth, answer) == score


def test_rewards():
    assert paligemma_reward(5) == 1.0
    assert paligemma_reward(1) == 25.0
    assert clip_reward(0.5) == 0.25


def test_empty_truth_is_an_error():
    with pytest.raises(ValueError):
        rubric_score((), "above")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TERMS), min_size=1, max_size=3, unique=True), st.text(max_size=200))
def test_fuzz_score_always_in_range(truth, answer):
    assert 1 <= rubric_score(truth, answer) <= 5


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TERMS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(["above", "below", "behind", "in front of", "to the left of", "to the right of",
                              "the", "and", "cup", "is", ",", "?"]), max_size=12),
)
def test_fuzz_answers_built_from_phrases(truth, words):
    score = rubric_score(truth, " ".join(words))
    assert 1 <= score <= 5
    if not parse_terms(" ".join(words)) & set(truth):
        assert score == 1
