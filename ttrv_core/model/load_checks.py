"""Checks before a model is loaded: the id or folder, its config, custom code; and the
hub's errors while loading. Each failure is a ModelLoadError that says what to do
(loading.load_policy calls these; nothing here branches on a model's name)."""
from __future__ import annotations

import os
from contextlib import contextmanager

from ttrv_core.errors import ModelLoadError
from ttrv_core.model.families import Family, family_of, supported

TRUST_REMOTE_CODE_ENV = "TTRV_TRUST_REMOTE_CODE"
"""Set to 1 to let the app load checkpoints whose architecture comes as custom code."""


def check_config(model_id: str, trust_remote_code: bool) -> Family:
    """The family of `model_id`, or a ModelLoadError that says what to do."""
    from transformers import PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not os.path.isdir(model_id) and looks_like_path(model_id):
        raise ModelLoadError(f"no model folder at '{model_id}' (it does not exist); give a folder written by "
                             "save_pretrained, or a hub id such as Qwen/Qwen2.5-VL-3B-Instruct")
    if os.path.isdir(model_id) and not os.path.isfile(os.path.join(model_id, "config.json")):
        raise ModelLoadError(f"folder '{model_id}' has no config.json: not a transformers checkpoint "
                             "(save_pretrained writes one)")
    try:
        cfg, _ = PretrainedConfig.get_config_dict(model_id)
    except Exception as e:  # noqa: BLE001 - hub and file errors all become one message
        raise ModelLoadError(hub_message(model_id, e)) from e
    model_type = cfg.get("model_type")
    native = model_type in CONFIG_MAPPING  # transformers has the classes: custom code is not needed
    if cfg.get("auto_map") and not native and not trust_remote_code:
        raise ModelLoadError(
            f"'{model_id}' needs trust_remote_code: its architecture '{model_type}' comes as custom code "
            "in the checkpoint (config auto_map), which is refused by default because it runs arbitrary "
            "Python. Allow it only for code you trust (load_policy(..., trust_remote_code=True); "
            f"the CLI: --trust-remote-code; the app: {TRUST_REMOTE_CODE_ENV}=1), or use a "
            "transformers-native checkpoint of a supported family (e.g. OpenGVLab/InternVL3-2B-hf); "
            f"supported: {supported()}")
    if model_type is None:
        raise ModelLoadError(f"'{model_id}' has a config.json without model_type; supported: {supported()}")
    family = family_of(model_type)
    if not native and not trust_remote_code:
        import transformers
        raise ModelLoadError(f"{family.label} ('{model_type}') needs a newer transformers than the installed "
                             f"{transformers.__version__}: pip install -U transformers")
    return family


def looks_like_path(model_id: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else that names no folder is a missing path."""
    return (os.path.isabs(model_id) or model_id.startswith((".", "~")) or model_id.count("/") > 1
            or "\\" in model_id or model_id.endswith("/"))


def hub_message(model_id: str, e: BaseException) -> str:
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )
    chain = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    kinds = tuple(type(c) for c in chain)
    login = "run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN"
    if any(issubclass(k, GatedRepoError) for k in kinds):
        return (f"'{model_id}' is a gated model: accept its license on https://huggingface.co/{model_id} "
                f"with your account, then {login}")
    if any(issubclass(k, RepositoryNotFoundError) for k in kinds):
        return (f"'{model_id}' was not found on the hub: check the id (owner/name); if it is private, {login}")
    if any(issubclass(k, HFValidationError) for k in kinds):
        return f"'{model_id}' is neither a local folder nor a valid hub id (owner/name)"
    if any(issubclass(k, (LocalEntryNotFoundError, ConnectionError, TimeoutError)) for k in kinds) \
            or os.environ.get("HF_HUB_OFFLINE") == "1":
        return (f"'{model_id}' was not found locally and the hub is unreachable or the id does not exist; "
                f"check the id, your network, and for gated models {login}")
    return f"could not read the config of '{model_id}': {chain[0]}"


@contextmanager
def load_errors(model_id: str):
    """Hub errors while fetching weights, and missing packages, as ModelLoadError."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    hub = (HfHubHTTPError, LocalEntryNotFoundError, ConnectionError)
    try:
        yield
    except ModelLoadError:
        raise
    except ImportError as e:
        raise ModelLoadError(f"loading '{model_id}' needs a package that is not installed: {e}") from e
    except OSError as e:
        if isinstance(e, hub) or isinstance(e.__cause__, hub):
            raise ModelLoadError(hub_message(model_id, e)) from e
        raise
