"""The MLflow tracking store and model registry, as register, predict and promote reach them."""

from __future__ import annotations

import os
from contextlib import contextmanager


def registry_client(uri: str):
    """An MLflow client for the tracking store at `uri`; its registry is MLFLOW_REGISTRY_URI when set."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def version_numbers(client, name: str) -> list[str]:
    """Every registered version of `name`, in order, for error messages that say what exists."""
    return sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)


def first_line(err: Exception) -> str:
    """An MLflow error's first line (its messages can run to a page), or its type when it has none."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


@contextmanager
def tracking_store(uri: str):
    """Point MLflow at `uri` for one block. MLflow also exports the URI to MLFLOW_TRACKING_URI, which would
    make the next project in the same process write here, so the user's own value is restored after."""
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
