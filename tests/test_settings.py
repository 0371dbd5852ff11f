"""Each setting is declared once (config.py: its help, bounds, flag, form label and public cap); the
CLI's flags, the app's form and a public Space's caps are derived from the declarations."""
import re

import pytest

from ttrv_core import cli
from ttrv_core.app import form_fields, sessions
from ttrv_core.config import TTRVConfig

SETTINGS = TTRVConfig.settings()

def _other(name):
    """A value of the field that is not its default, within its bounds."""
    s, default = SETTINGS[name], getattr(TTRVConfig(), name)
    if s.choices:
        return next(c for c in s.choices if c != default)
    value = {"int": 3, "float": 0.5}[TTRVConfig.__dataclass_fields__[name].type]
    return value if value != default else value + 1


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.flag])
def test_every_flagged_setting_is_a_cli_flag_that_sets_its_field(name):
    value = _other(name)
    args = cli.parser().parse_args([f"--{SETTINGS[name].flag}", str(value)])
    assert getattr(args, name) == value and cli.FLAGS[SETTINGS[name].flag] == name
    action = next(a for a in cli.parser()._actions if a.dest == name)
    assert action.help.startswith(SETTINGS[name].help) and list(action.choices or ()) == list(SETTINGS[name].choices)


def test_the_form_shows_exactly_the_labelled_settings_and_gives_them_back():
    assert form_fields.SETTINGS == [n for n, s in SETTINGS.items() if s.label]
    cfg = TTRVConfig(n_votes=8, n_train=4, lr=0.01, reward="frequency", gradient_checkpointing="mlp",
                     collapse_guard=False, consensus=0.25, precision="fp32")
    again = form_fields.config(cfg.model, **dict(zip(form_fields.SETTINGS, form_fields.values(cfg))))
    assert again == cfg


def test_the_page_has_a_widget_per_setting_with_its_label():
    import app
    labels = {c.get("props", {}).get("label") for c in app.demo.config["components"]}
    assert {s.label for s in SETTINGS.values() if s.label} <= labels


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.cap is not None and n != "max_steps"])
def test_a_public_space_refuses_each_capped_setting_above_its_cap(name):
    cap = SETTINGS[name].cap
    over = TTRVConfig().with_(**{name: cap + 1})
    said = sessions.public_refusal("m", over, 10, None, {"m"})
    assert said == f"this public Space allows {name} up to {cap}, got {cap + 1}"
    assert sessions.CAPS[name] == cap


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.low is not None or s.above is not None])
def test_each_bound_is_checked_and_named(name):
    s = SETTINGS[name]
    below = (s.low if s.low is not None else s.above) - 1
    with pytest.raises(ValueError, match=name):
        TTRVConfig(**{name: below})


def test_a_choice_left_empty_in_the_form_is_the_default():
    """An API call (or a cleared radio) sends None or '' for a choice: the setting's default, not an error."""
    cfg = form_fields.config("m", reward=None, precision="", gradient_checkpointing=None, n_votes=8, n_train=4)
    paper = TTRVConfig()
    assert (cfg.reward, cfg.precision, cfg.gradient_checkpointing) == (paper.reward, paper.precision,
                                                                       paper.gradient_checkpointing)


SYMBOLS = ("·", "−", "*", "=", "^", "×", "≤", "≥", "α", "β", "λ", "τ")
"""Formula symbols: a setting's help says in words what a formula would (method/ states the formulas)."""
JARGON = ("advantage", "GRPO", "PPO", "KL", "logit", "log-prob", "entropy", "H_norm", "r1", "pi_old", "verl",
          "SCRL", "TTRL", "NF4", "LoRA", "nucleus", "alpha", "beta", "lambda", "tau", "eps", "std", "clip_ratio")
"""Words a person who has not read the paper cannot be expected to know: each may follow its plain
gloss in parentheses ("... (the paper's N)"), never stand in for it."""
FORM_HELP_CHARS = 200
"""The most a form field's help may hold: it shows under the field, on a phone too."""


def _plain(text: str) -> str:
    """The text outside parentheses: what must read plainly on its own."""
    while (inner := re.sub(r"\([^()]*\)", "", text)) != text:
        text = inner
    return text


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_says_in_plain_words_what_it_does(name):
    text = SETTINGS[name].help
    plain = _plain(text)
    assert len(plain.split()) >= 5, f"{name}: no plain help"
    assert not [s for s in SYMBOLS if s in text], f"{name}: formula symbols in {text!r}"
    jargon = [w for w in JARGON if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", plain, re.IGNORECASE)]
    assert not jargon, f"{name}: {jargon} outside a parenthesised gloss in {text!r}"


@pytest.mark.parametrize("name", form_fields.SETTINGS)
def test_each_setting_of_the_form_has_short_help_without_repository_paths(name):
    text = SETTINGS[name].help
    assert 0 < len(text) <= FORM_HELP_CHARS, f"{name}: {len(text)} characters"
    assert not re.search(r"\w\.py\b|docs/", text), f"{name}: a repository path in {text!r}"


def test_every_field_of_the_form_shows_its_help():
    """Numbers too (they had none): each setting's widget carries its help under its label."""
    from ttrv_core.app import form_fields
    for name in form_fields.SETTINGS:
        kind, kw = form_fields.widget(name, getattr(TTRVConfig(), name), public=False)
        assert kind in ("Number", "Radio", "Dropdown", "Checkbox") and kw["info"] == TTRVConfig.settings()[name].help
        assert kw["label"] == TTRVConfig.settings()[name].label
