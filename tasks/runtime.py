"""Process-wide settings applied at entry points only (never at import)."""

from __future__ import annotations

import os
import warnings

OFFLINE_DEFAULTS = {  # telemetry off and no model-hub calls: these machines and many users' are offline
    "DO_NOT_TRACK": "true",  # MLflow reads only the word true
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' per-load progress bars drown the flow's log
    "TRANSFORMERS_VERBOSITY": "error",  # the "classifier.* newly initialized" report is expected here
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def quiet_offline_defaults() -> None:
    """Set the offline, telemetry and log-noise switches, keeping any value the user already set."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # peft calls a transformers helper that transformers 5 deprecates; nothing for a user to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
