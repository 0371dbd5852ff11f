"""The CLI and the app follow one rule from the config: LoRA alpha = 2 x rank unless set, and an
image-size limit (max_pixels) that reaches the model; RunEnd has no field that nothing sets."""
from dataclasses import fields

import pytest

from ttrv_core import cli
from ttrv_core.config import TTRVConfig
from ttrv_core.events import RunEnd
from ttrv_core.model.loading import ModelLoadError


@pytest.mark.parametrize("kw, alpha", [
    ({}, 32), ({"lora_r": 8}, 16), ({"lora_r": 8, "lora_alpha": 5}, 5),
    ({"lora_r": 16, "lora_alpha": 32}, 32),            # a run folder's config.json names both
    ({"lora_r": 8, "lora_alpha": 32}, 32),             # an alpha given is kept, whatever the rank
])
def test_lora_alpha_rule(kw, alpha):
    cfg = TTRVConfig(**kw)
    assert cfg.lora_alpha == alpha
    assert TTRVConfig(**cfg.to_dict()) == cfg           # a stored config reads back the same


def test_older_config_json_loads():
    old = {k: v for k, v in TTRVConfig().to_dict().items() if k not in ("max_pixels", "recompute_old_logprobs")}
    cfg = TTRVConfig(**{**old, "lora_alpha": 32, "gradient_checkpointing": False})
    assert (cfg.lora_alpha, cfg.max_pixels, cfg.recompute_old_logprobs) == (32, 0, True)
    with pytest.raises(ValueError, match="max_pixels"):
        TTRVConfig(max_pixels=-1)


@pytest.mark.parametrize("argv, alpha, max_pixels", [
    ([], 32, None),                                     # None: load_policy uses the family's default
    (["--lora-r", "8"], 16, None),                      # 2 x rank, not a fixed 32
    (["--lora-r", "8", "--lora-alpha", "4"], 4, None),
    (["--max-pixels", "4096"], 32, 4096),
])
def test_cli_passes_the_configs_alpha_and_max_pixels(monkeypatch, tmp_path, capsys, argv, alpha, max_pixels):
    seen = {}

    def fake_load(model, precision, device, lora_r, lora_alpha, seed, adapter=None, **kw):
        seen.update(lora_r=lora_r, lora_alpha=lora_alpha, **kw)
        raise ModelLoadError("stop here")

    monkeypatch.setattr(cli, "load_policy", fake_load)
    assert cli.main(argv + ["--limit", "2", "--out", str(tmp_path / "run")]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen["lora_alpha"] == alpha and seen["max_pixels"] == max_pixels


def test_run_end_has_no_unset_error_field():
    assert "error" not in {f.name for f in fields(RunEnd)}
