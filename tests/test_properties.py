"""Property tests (hypothesis): rewards against their published definitions, and answer parsing on any text.

Definitions checked (rewards.py module docstring), for votes a_1..a_N with M distinct
answers and shares p_k:
    frequency r1(a_i) = count(a_i) / N            majority 1 iff a_i is the most common answer (first seen on ties)
    H_norm = -sum_k p_k ln p_k / ln M (0 if M = 1)    ttrv = r1 - alpha * H_norm
and the consequence the module states: group-normalised advantages of ttrv equal those of frequency.
"""
import math
from collections import Counter

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ttrv_core.method.grpo import group_advantages
from ttrv_core.method.rewards import (
    REWARDS,
    answer_prior,
    compute_rewards,
    entropy,
    frequency_reward,
    majority_answer,
    majority_reward,
    normalized_entropy,
    ttrv_marginal_reward,
    ttrv_reward,
    vote_entropy,
    vote_stats,
)
from ttrv_core.tasks.answers import canonical_reference, extract_answer, extract_class, extract_letter, normalize_open
from ttrv_core.tasks.prompts import LETTERS, build_prompt

SETTINGS = settings(max_examples=150, deadline=None)
TOL = 1e-12

# votes as the engine sees them: option letters, raw strings, the empty answer
answer = st.sampled_from(["A", "B", "C", "D", "", "KOALA", "7", "red car"]) | st.text(max_size=4)
votes = st.lists(answer, min_size=1, max_size=40)
alphas = st.floats(0, 2, allow_nan=False)


def permuted(xs, perm):
    return [xs[i] for i in perm]


votes_and_perm = votes.flatmap(lambda v: st.tuples(st.just(v), st.permutations(range(len(v)))))


# --------------------------------------------------------------------------- rewards: definitions

@SETTINGS
@given(votes)
def test_frequency_is_share_of_votes(v):
    n, counts = len(v), Counter(v)
    r = frequency_reward(v)
    assert r == [counts[a] / n for a in v]
    assert all(0 < x <= 1 for x in r)
    assert sum(r) == pytest.approx(sum(c * c for c in counts.values()) / n)  # each answer's share, counted c times


@SETTINGS
@given(votes)
def test_majority_reward_marks_exactly_the_majority(v):
    r, maj, counts = majority_reward(v), majority_answer(v), Counter(v)
    assert set(r) <= {0.0, 1.0}
    assert counts[maj] == max(counts.values())
    assert maj == next(a for a in v if counts[a] == max(counts.values()))  # ties: first seen
    assert r == [float(a == maj) for a in v] and sum(r) == counts[maj]


@SETTINGS
@given(votes)
def test_normalized_entropy_definition_and_bounds(v):
    n, counts = len(v), Counter(v)
    m = len(counts)
    h = -sum(c / n * math.log(c / n) for c in counts.values())
    assert entropy(v) == pytest.approx(h, abs=TOL)
    hn = normalized_entropy(v)
    assert -TOL <= hn <= 1 + TOL
    if m == 1:
        assert hn == 0.0
    else:
        assert hn == pytest.approx(h / math.log(m), abs=TOL)
    if len(set(counts.values())) == 1:  # every distinct answer equally often: maximal
        assert hn == pytest.approx(1.0 if m > 1 else 0.0, abs=1e-9)


@SETTINGS
@given(votes, alphas)
def test_ttrv_is_frequency_minus_alpha_entropy(v, alpha):
    total, parts = ttrv_reward(v, alpha)
    hn = normalized_entropy(v)
    assert total == pytest.approx([r - alpha * hn for r in frequency_reward(v)], abs=TOL)
    assert parts == {"frequency": frequency_reward(v), "entropy_norm": [hn] * len(v)}
    assert all(-alpha - TOL <= t <= 1 + TOL for t in total)
    assert compute_rewards("ttrv", v, alpha) == (total, parts)


@SETTINGS
@given(votes, alphas)
def test_marginal_variant_rewards_more_common_answers_more(v, alpha):
    """The leave-one-out entropy credit is monotone in an answer's count (entropy is Schur-concave)."""
    total, parts = ttrv_marginal_reward(v, alpha)
    counts = Counter(v)
    assert parts["frequency"] == frequency_reward(v)
    assert total == pytest.approx([r + alpha * m for r, m in zip(parts["frequency"], parts["entropy_marginal"])])
    by_answer = {a: (counts[a], m) for a, m in zip(v, parts["entropy_marginal"])}
    for ca, ma in by_answer.values():
        for cb, mb in by_answer.values():
            if ca > cb:
                assert ma >= mb - 1e-9
    if len(counts) == 1:
        assert parts["entropy_marginal"] == [0.0] * len(v)


# --------------------------------------------------------------------------- rewards: invariances

@SETTINGS
@given(votes_and_perm, st.sampled_from(REWARDS))
def test_permuting_votes_permutes_rewards(vp, name):
    v, perm = vp
    counts = Counter(v)
    top = [a for a, c in counts.items() if c == max(counts.values())]
    assume(name != "majority" or len(top) == 1)  # a tie goes to the first seen, which a permutation may change
    # calibrated: every vote valid, the step's prior over these votes (the same for any order)
    kw = dict(valid=[True] * len(v), prior=answer_prior(v)) if name == "calibrated" else {}
    total, parts = compute_rewards(name, v, **kw)
    total_p, parts_p = compute_rewards(name, permuted(v, perm), **kw)
    assert total_p == pytest.approx(permuted(total, perm), abs=TOL)
    for key in parts:
        assert parts_p[key] == pytest.approx(permuted(parts[key], perm), abs=TOL)


@SETTINGS
@given(votes, st.integers(1, 40), alphas)
def test_entropy_term_cancels_in_group_advantages(v, g, alpha):
    """Trained on the first G of N votes, rewards over all N: ttrv and frequency advantages agree."""
    adv = {name: group_advantages(torch.tensor(compute_rewards(name, v, alpha)[0][:g], dtype=torch.float64))
           for name in ("ttrv", "frequency")}
    assert torch.allclose(adv["ttrv"], adv["frequency"], atol=1e-9)


@SETTINGS
@given(votes)
def test_vote_stats_agree_with_rewards(v):
    s = vote_stats(v)
    assert s.majority == majority_answer(v) and s.counts == dict(Counter(v))
    assert s.majority_share == max(frequency_reward(v)) and s.n_distinct == len(set(v))
    assert s.entropy_paper == normalized_entropy(v) and s.entropy == vote_entropy(v)
    assert list(s.counts.values()) == sorted(s.counts.values(), reverse=True)


# --------------------------------------------------------------------------- answer parsing

options = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=26)
words = st.sampled_from(["red", "car", "blue", "dog", "sea", "lion", "house", "cat", "big"])
class_names = st.lists(st.lists(words, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=6, unique=True)


@SETTINGS
@given(st.text(), st.sampled_from(["open", "choice", "classify"]), options)
def test_parsing_never_raises_and_gives_text(reply, task, opts):
    out = extract_answer(task, reply, opts)
    assert isinstance(out, str)
    assert isinstance(canonical_reference(task, reply, opts), str)
    if task == "classify":
        assert out in opts or out == normalize_open(reply)


@SETTINGS
@given(st.text(), st.integers(1, 26))
def test_letter_is_an_option_or_the_cleaned_reply(reply, n):
    out = extract_letter(reply, n)
    cleaned = reply.strip().rstrip("./").lstrip(":").strip().upper()
    assert out in LETTERS[:n] or out == cleaned


@SETTINGS
@given(st.integers(1, 26).flatmap(lambda n: st.tuples(st.just(n), st.sampled_from(LETTERS[:n]))),
       st.sampled_from(["{}", " {} ", "{}.", "{}/", ":{}", "({})", "{})", "Answer: {}", "The answer is {}.", "**{}**"]),
       st.booleans())
def test_bare_option_letter_is_returned(nl, form, lower):
    n, letter = nl
    reply = form.format(letter.lower() if lower else letter)
    assert extract_letter(reply, n) == letter
    assert extract_answer("choice", reply, [f"option {i}" for i in range(n)]) == letter


@SETTINGS
@given(st.text(), st.integers(1, 26).flatmap(lambda n: st.tuples(st.just(n), st.sampled_from(LETTERS[:n]))))
def test_the_last_standalone_letter_wins(prefix, nl):
    n, letter = nl
    assert extract_letter(f"{prefix} {letter}", n) == letter


@SETTINGS
@given(st.text())
def test_normalize_open_is_idempotent(reply):
    once = normalize_open(reply)
    assert normalize_open(once) == once
    assert once == once.strip() and "  " not in once


@SETTINGS
@given(class_names, st.data())
def test_class_named_in_the_reply_is_found(classes, data):
    cls = data.draw(st.sampled_from(classes))
    assert extract_class(cls, classes) == cls
    assert extract_class(f"It is a {cls.upper()}.", classes) == cls
    assert extract_answer("classify", f"I think: {cls}", classes) == cls


@SETTINGS
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=26, unique_by=normalize_open), st.data())
def test_choice_reference_by_text_or_letter(opts, data):
    assume(all(normalize_open(o) for o in opts))
    i = data.draw(st.integers(0, len(opts) - 1))
    assert canonical_reference("choice", opts[i], opts) == LETTERS[i]
    assert canonical_reference("choice", LETTERS[i], opts) in LETTERS[:len(opts)]
    prompt = build_prompt("choice", "", opts)
    assert all(f"\n{LETTERS[j]}. {o}" in prompt for j, o in enumerate(opts))


# --------------------------------------------------------------------------- input files: never an exception

HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns on corrupt EXIF before refusing the file
@settings(max_examples=100, deadline=None)
@given(st.sampled_from(HEADERS), st.binary(max_size=300))
def test_any_bytes_as_an_image_give_a_message_or_an_rgb_image(header, body):
    import tempfile
    from pathlib import Path

    from ttrv_core.inputs.images import check_image, load_image
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.png"
        p.write_bytes(header + body)
        err = check_image(p)
        if err is None:
            assert load_image(p).mode == "RGB"
        else:  # one of the messages images.py writes, each saying what is wrong
            assert err.startswith(("cannot read image: ", "image ", "empty file")), err


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab.png,;\t\"'|\n\r ?é\ufeff\0")), max_size=120),
       st.sampled_from(["q.csv", "q.jsonl"]), st.sampled_from(["open", "choice"]))
def test_any_questions_file_gives_items_or_problems(text, name, task):
    import tempfile
    from pathlib import Path

    from PIL import Image

    from ttrv_core.inputs.dataset import load_dataset
    with tempfile.TemporaryDirectory() as d:
        Image.new("RGB", (4, 4)).save(Path(d) / "a.png")
        (Path(d) / name).write_text(text, encoding="utf-8")
        ds = load_dataset(Path(d), questions_file=Path(d) / name, task=task)
        assert all(p.file in (name, "a.png") and p.message.strip() for p in ds.problems), ds.problems
        assert len({i.id for i in ds.items}) == len(ds.items)
        for it in ds.items:
            assert it.path.name == "a.png" and it.task == task and it.question.strip()
            assert it.prompt == build_prompt(task, it.question, it.options)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=4))
def test_integral_decimals_meet_integers(k, zeros):
    """A reference written "7.0" (a spreadsheet's habit) counts the same as a vote "7";
    integers keep their zeros."""
    from ttrv_core.tasks.answers import canonical_reference, normalize_open
    assert normalize_open(f"{k}." + "0" * zeros) == normalize_open(str(k)) == str(k)
    assert canonical_reference("open", f"{k}.{'0' * zeros}", ()) == str(k)
