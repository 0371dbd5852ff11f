"""Answer parsing: a lone article that is the answer, the pronoun I that is not option I, and the
authors' quirks that stay (<= 8 options)."""
import pytest

from ttrv_core.tasks.answers import canonical_reference, extract_answer, extract_letter, is_valid, normalize_open


@pytest.mark.parametrize("reply, want", [
    ("A", "a"),                 # not '': a one-letter answer is not an article
    ("a.", "a"),
    ("The", "the"),
    ("Plan A", "plan a"),       # a last word is never dropped
    ("an A", "a"),
    ("A red car!", "red car"),  # an article before a word still goes
    ("the answer is a dog", "answer is dog"),
])
def test_normalize_open_keeps_a_lone_article(reply, want):
    assert normalize_open(reply) == want


def test_open_answer_a_is_a_vote_and_meets_its_reference():
    assert extract_answer("open", "A") == canonical_reference("open", "a") == "a"
    assert extract_answer("open", "A") != extract_answer("open", "B")


@pytest.mark.parametrize("reply, want", [
    ("B, I think", "B"),               # not 'I': the pronoun is not option I
    ("C. I'm not sure", "C"),
    ("D, I\u2019d say", "D"),
    ("I think it is E", "E"),
    ("I think so", "I THINK SO"),      # no option named: the cleaned reply
    ("The answer is I", "I"),          # option I itself still reads as I
    ("I", "I"),
    ("(I)", "I"),
    ("I. koala", "I"),
    ("Answer: i", "I"),
])
def test_pronoun_i_is_not_option_i(reply, want):
    assert extract_letter(reply, 9) == want
    assert extract_letter(reply, 26) == want


@pytest.mark.parametrize("reply, n, want", [
    ("C. B", 4, "B"),                  # the LAST standalone letter, as the authors' code
    ("C. B", 8, "B"),
    ("It is a cat", 4, "A"),           # the article "a" reads as A
    ("It is a cat, B", 4, "B"),
    ("It is a cat", 8, "A"),
    ("B, I think", 8, "B"),            # I is not an option letter below 9 options
    ("I think", 8, "I THINK"),
])
def test_authors_quirks_stay_up_to_8_options(reply, n, want):
    assert extract_letter(reply, n) == want


# A valid multiple-choice answer is exactly one of the option letters. An empty reply, "." (cleaned to
# ""), and a run of option letters such as "HI" or "DEF" (a substring of "ABCDEFGHIJ") are no answer:
# the authors' evaluation scores them wrong, and they are the failure their collapsed runs show.
@pytest.mark.parametrize("reply, n, valid", [
    ("", 4, False), (".", 4, False), ("  ", 4, False), ("HI", 10, False), ("DEF", 10, False), ("AB", 4, False),
    ("K", 10, False), ("E", 4, False), ("It must be two.", 10, False),
    ("A", 4, True), ("J.", 10, True), ("The answer is C", 4, True), ("d", 4, True),
])
def test_choice_valid_is_exactly_one_option_letter(reply, n, valid):
    options = [str(i) for i in range(n)]
    assert is_valid("choice", extract_answer("choice", reply, options), options) is valid
