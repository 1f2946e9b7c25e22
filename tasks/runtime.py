"""Process-wide settings applied at entry points only (never at import)."""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {  # telemetry off and no model-hub calls: these machines and many users' are offline
    "DO_NOT_TRACK": "true",  # MLflow reads only the word true
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet_offline_defaults() -> None:
    """Set the offline and telemetry switches, keeping any value the user already set."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
