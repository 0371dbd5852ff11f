"""Every user-facing loading and memory error, triggered: a clear message, not a stack trace.

The hub is never reached: conftest sets HF_HUB_OFFLINE=1, and the online
failures (gated, unknown repository) are simulated with the hub's own error
types, raised where transformers would raise them.
"""
import json
import shutil
import time
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from ttrv_core.errors import ModelLoadError, OutOfMemory, explain_oom, oom_message
from ttrv_core.model.families import FAMILIES
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.rollout import sample

LOGIN = "huggingface-cli login"


def _config_folder(tmp_path, **cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def _raise_from_hub(monkeypatch, error):
    """transformers wraps hub errors in OSError `from` the hub's own error; do the same."""
    from transformers import PretrainedConfig

    def fail(*a, **k):
        raise OSError("could not fetch config.json") from error
    monkeypatch.setattr(PretrainedConfig, "get_config_dict", fail)


def _http_error(kind, msg):
    return kind(msg, response=SimpleNamespace(headers={}, request=None))


@pytest.mark.parametrize("path", ["/no/such/model/folder", "./no_such_folder", "models/a/b"])
def test_missing_local_folder(path):
    with pytest.raises(ModelLoadError, match="no model folder at .* does not exist"):
        load_policy(path, "fp32", "cpu")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_policy(str(tmp_path), "fp32", "cpu")


def test_unknown_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(ModelLoadError) as e:
        load_policy("nobody-here/no-such-vlm", "fp32", "cpu")
    msg = str(e.value)
    assert "not found locally and the hub is unreachable or the id does not exist" in msg
    assert "check the id, your network" in msg and LOGIN in msg and "HF_TOKEN" in msg
    assert time.time() - t0 < 10


def test_invalid_hub_id():
    with pytest.raises(ModelLoadError, match="neither a local folder nor a valid hub id"):
        load_policy("not a valid id!", "fp32", "cpu")


def test_gated_model(monkeypatch):
    from huggingface_hub.errors import GatedRepoError
    _raise_from_hub(monkeypatch, _http_error(GatedRepoError, "403 Client Error: gated repo"))
    with pytest.raises(ModelLoadError) as e:
        load_policy("google/gemma-3-4b-it", "fp32", "cpu")
    msg = str(e.value)
    assert "gated" in msg and "license" in msg and "huggingface.co/google/gemma-3-4b-it" in msg
    assert LOGIN in msg and "HF_TOKEN" in msg


def test_repository_not_found_online(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError
    _raise_from_hub(monkeypatch, _http_error(RepositoryNotFoundError, "404 Client Error"))
    with pytest.raises(ModelLoadError, match="not found on the hub: check the id"):
        load_policy("Qwen/Qwen2.5-VL-3B-Instruct-typo", "fp32", "cpu")


def test_unsupported_architecture_names_the_supported(tmp_path):
    folder = _config_folder(tmp_path, model_type="llama", architectures=["LlamaForCausalLM"])
    with pytest.raises(ModelLoadError) as e:
        load_policy(folder, "fp32", "cpu")
    msg = str(e.value)
    assert "architecture 'llama' is not supported" in msg
    assert all(f.label in msg and all(t in msg for t in f.model_types) for f in FAMILIES)


REMOTE = dict(model_type="internvl_chat", architectures=["InternVLChatModel"],
              auto_map={"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                        "AutoModel": "modeling_internvl_chat.InternVLChatModel"})


def test_custom_code_is_refused_by_default(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_policy(_config_folder(tmp_path, **REMOTE), "fp32", "cpu")
    msg = str(e.value)
    assert "needs trust_remote_code" in msg and "trust_remote_code=True" in msg
    assert "InternVL3-2B-hf" in msg  # the native alternative


def test_the_environment_alone_does_not_allow_custom_code(tmp_path, monkeypatch):
    """TTRV_TRUST_REMOTE_CODE=1 is the app operator's switch (loading.remote_code_allowed); the
    library itself only runs checkpoint code when a caller passes trust_remote_code=True."""
    from ttrv_core.model.loading import remote_code_allowed
    monkeypatch.setenv("TTRV_TRUST_REMOTE_CODE", "1")
    assert remote_code_allowed()
    with pytest.raises(ModelLoadError, match="needs trust_remote_code"):
        load_policy(_config_folder(tmp_path, **REMOTE), "fp32", "cpu")
    for off in ("", "0", "yes"):
        monkeypatch.setenv("TTRV_TRUST_REMOTE_CODE", off)
        assert not remote_code_allowed()


def test_custom_code_allowed_explicitly_then_checked_against_the_table(tmp_path):
    # the user's permission passes the gate; the architecture must still be one of ours
    with pytest.raises(ModelLoadError, match="architecture 'internvl_chat' is not supported"):
        load_policy(_config_folder(tmp_path, **REMOTE), "fp32", "cpu", trust_remote_code=True)


def test_native_architecture_with_auto_map_loads_without_custom_code(tiny_models, tmp_path):
    folder = tmp_path / "qwen"
    shutil.copytree(tiny_models["qwen2_5_vl"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.Evil"}  # never imported
    (folder / "config.json").write_text(json.dumps(cfg))
    pol = load_policy(str(folder), "fp32", "cpu")
    assert type(pol.base).__module__.startswith("transformers.models.qwen2_5_vl")


def test_architecture_missing_from_this_transformers(tmp_path, monkeypatch):
    from transformers.models.auto import configuration_auto
    monkeypatch.setattr(configuration_auto, "CONFIG_MAPPING", {})
    with pytest.raises(ModelLoadError, match="needs a newer transformers.*pip install -U transformers"):
        load_policy(_config_folder(tmp_path, model_type="qwen3_vl"), "fp32", "cpu")


def test_missing_package(tiny_models, monkeypatch):
    from transformers import AutoProcessor

    def fail(*a, **k):
        raise ImportError("Package `num2words` is required to run SmolVLM processor.")
    monkeypatch.setattr(AutoProcessor, "from_pretrained", fail)
    with pytest.raises(ModelLoadError, match="needs a package that is not installed: .*num2words"):
        load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu")


def test_4bit_without_bitsandbytes(tiny_models, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    with pytest.raises(ModelLoadError, match="4-bit loading needs bitsandbytes.*bf16 / fp32"):
        load_policy(str(tiny_models["qwen2_5_vl"]), "4bit", "cpu")


def test_unknown_precision(tiny_models):
    with pytest.raises(ModelLoadError, match="precision must be auto, 4bit, bf16 or fp32"):
        load_policy(str(tiny_models["qwen2_5_vl"]), "int3", "cpu")


# --------------------------------------------------------------------------- out of memory

def _oom(*a, **k):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_while_loading_says_use_4bit(tiny_models, monkeypatch):
    from transformers import AutoModelForImageTextToText
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", _oom)
    with pytest.raises(OutOfMemory) as e:
        load_policy(str(tiny_models["qwen2_5_vl"]), "bf16", "cpu")
    msg = str(e.value)
    assert "Out of GPU memory while loading" in msg and "4-bit" in msg and "smaller model" in msg
    assert isinstance(e.value.__cause__, torch.OutOfMemoryError)


def test_oom_while_sampling_names_what_to_lower(tiny_models, monkeypatch):
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu")
    prompt = prepare_prompt(pol, Image.new("RGB", (50, 37)), "What is shown?")
    monkeypatch.setattr(pol.model, "forward", _oom)  # the GPU fills up in the prefill
    with pytest.raises(OutOfMemory) as e:
        with explain_oom("sampling", n_votes=32, n_train=16, max_pixels=pol.max_pixels, precision="bf16"):
            sample(pol, prompt, 32)
    msg = str(e.value)
    for what in ("votes per image N (n_votes) (now 32)", "trained answers G (n_train) (now 16)",
                 f"image size (max_pixels) (now {pol.max_pixels})", "4-bit"):
        assert what in msg, what


def test_oom_message_in_4bit_does_not_suggest_4bit():
    msg = oom_message("training", n_votes=8, n_train=4, precision="4bit")
    assert "now 8" in msg and "now 4" in msg and "load the model in 4-bit" not in msg


def test_explain_oom_leaves_other_errors_alone():
    with pytest.raises(ValueError, match="unrelated"):
        with explain_oom("training"):
            raise ValueError("unrelated")
    with pytest.raises(OutOfMemory):  # older torch: a RuntimeError that says so
        with explain_oom("training"):
            raise RuntimeError("CUDA error: out of memory")


def test_cli_flag_passes_the_gate(tmp_path, capsys):
    """python -m ttrv_core refuses checkpoint code unless --trust-remote-code is given."""
    from ttrv_core.cli import main
    model = str(_config_folder(tmp_path, **REMOTE))
    args = ["--model", model, "--limit", "2", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert "needs trust_remote_code" in capsys.readouterr().err
    assert main(args + ["--trust-remote-code"]) == 2
    assert "architecture 'internvl_chat' is not supported" in capsys.readouterr().err


def test_oom_message_suggests_checkpointing_in_training_only():
    assert "gradient checkpointing 'mlp' or 'layers') (now off)" in oom_message("training", 8, 4, checkpointing="off")
    assert "gradient checkpointing" in oom_message("training", 8, 4, checkpointing="mlp")
    assert "gradient checkpointing" not in oom_message("training", 8, 4, checkpointing="layers")
    assert "gradient checkpointing" not in oom_message("evaluating", 8)  # no training there
