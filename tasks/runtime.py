"""Process-wide settings applied at entry points only (never at import)."""

from __future__ import annotations

import os
import random
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


# Prefect servers this process starts (a run's temporary one, `nichetune up`'s) keep concurrency leases on disk,
# under PREFECT_HOME, instead of in memory: a slot whose holder was killed is then freed when its lease expires,
# even after the server restarted (flows/slots.py)
SERVER_DEFAULTS = {
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
}


def quiet_offline_defaults() -> None:
    """Set the offline, telemetry and log-noise switches and the servers' lease storage, keeping any value the
    user already set."""
    for key, value in {**OFFLINE_DEFAULTS, **SERVER_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    # peft calls a transformers helper that transformers 5 deprecates; nothing for a user to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def seed_everything(seed: int) -> None:
    """Seed every generator a training run draws from (the seed comes from base.seed only) and have torch use
    deterministic kernels, so that the same seed on the same machine gives the same weights and metrics."""
    import numpy as np
    import torch  # here, not at the top: the CLI imports this module and must start without torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # The default CPU kernel for the backward of an indexed read (the pair loss's row pairs) adds with atomics in
    # whatever order the threads run, so the same seed drifted apart from the second step. warn_only: an op with
    # no deterministic kernel warns rather than stopping a run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    # cuBLAS is deterministic only with a fixed workspace; it reads this when CUDA starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
