"""Share a run's adapter on the Hugging Face Hub.

    python -m ttrv_core ... --push-to-hub me/my-adapter      after the run, from its folder
    python -m ttrv_core.runs.hub RUN_DIR me/my-adapter       a run folder written before

What goes up is the run folder's adapter/ as `record` wrote it (folder.py), and nothing else:

    adapter_model.safetensors   the LoRA weights
    adapter_config.json         the base model as model_card.model_name names it (a hub id, or the
                                bundled demo's folder), never a path of this machine
    README.md                   the model card (model_card.py): base model, prompt, settings,
                                before and after, the command that made the run; its loading
                                code names the repo

The three files are copied to a temporary folder first and uploaded from there (create_repo, then
upload_folder: one commit), so the run folder is only read; a push that fails leaves it as it was.
The token is huggingface_hub's: `hf auth login`, or HF_TOKEN in the environment. A failure a person
can act on (no adapter, no token, no network, the Hub refusing) is a PushError whose message says what
to do; the CLI prints it and exits with 2.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

# huggingface_hub's HTTPError is its HTTP client's: a request that got no answer (HfHubHTTPError: an answer)
from huggingface_hub.errors import HfHubHTTPError, HTTPError, LocalTokenNotFoundError

from ttrv_core.errors import TTRVError
from ttrv_core.runs import model_card

FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")
"""The adapter as it goes up: weights, peft config, model card."""
LOGIN = ("log in with `hf auth login` or set HF_TOKEN (a token with write access: "
         "https://huggingface.co/settings/tokens)")


class PushError(TTRVError):
    """The adapter could not be pushed; the message says why and what to do. `reason` alone, without
    where the adapter stays on this machine (the app names no server folder)."""

    def __init__(self, reason: str, stays: str = ""):
        super().__init__(f"{reason}; {stays}" if stays else reason)
        self.reason = reason


def push_adapter(run_dir: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                 api: HfApi | None = None) -> str:
    """Upload RUN_DIR/adapter (FILES) to the model repo `repo_id`, created if it does not exist;
    returns the repo's URL. api: an HfApi or anything with its create_repo and upload_folder."""
    run_dir = Path(run_dir)
    adapter = run_dir / "adapter"
    missing = [name for name in FILES if not (adapter / name).is_file()]
    if missing:
        raise PushError(f"{adapter} holds no adapter ({', '.join(missing)} missing): nothing was trained in this "
                        "run (a run stopped or failed before its first step keeps none), so there is nothing to push")
    api = api if api is not None else HfApi()
    stays = f"the adapter stays in {adapter}"
    with tempfile.TemporaryDirectory(prefix="ttrv-push-") as tmp:
        staged = Path(tmp)
        for name in FILES:
            shutil.copyfile(adapter / name, staged / name)
        model_card.name_base(staged)   # an older run folder's config may hold a path
        card = staged / "README.md"   # its loading code: from the repo, not from a folder
        card.write_text(card.read_text(encoding="utf-8").replace(f'"{model_card.HERE}"', f'"{repo_id}"'),
                        encoding="utf-8")
        try:
            url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(staged), repo_type="model", token=token,
                              commit_message=f"TTRV adapter ({run_dir.name})")
        except LocalTokenNotFoundError as e:
            raise PushError(f"no Hugging Face token: {LOGIN}", stays) from e
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if status in (401, 403):
                raise PushError(f"the Hub refused the token for '{repo_id}' (HTTP {status}): {LOGIN}, "
                                f"or name a repo you may write to", stays) from e
            raise PushError(f"the Hub refused the push to '{repo_id}': {_first_line(e)}", stays) from e
        except (HTTPError, ConnectionError, TimeoutError) as e:   # no answer: no network, DNS, proxy, offline mode
            raise PushError(f"the Hub could not be reached ({_first_line(e)})",
                            f"{stays}; push it later with `python -m ttrv_core.runs.hub {run_dir} {repo_id}`") from e
    return str(url)


def push_after_run(run_dir: Path, repo_id: str) -> int:
    """The CLI's --push-to-hub: push, say where it went or why not; the exit status (0, or 2)."""
    try:
        url = push_adapter(run_dir, repo_id)
    except PushError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"adapter pushed: {url}")
    return 0


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m ttrv_core.runs.hub RUN_DIR REPO_ID")
    sys.exit(push_after_run(Path(sys.argv[1]), sys.argv[2]))
