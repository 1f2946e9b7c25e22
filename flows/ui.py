"""`nichetune ui`: the Prefect and MLflow servers with their UIs, on this machine only, until Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tasks.config import Paths
from tasks.errors import NichetuneError

HOST = "127.0.0.1"  # never exposed beyond this machine unless the user asks


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def server_commands(paths: Paths, prefect_port: int, mlflow_port: int) -> dict[str, list[str]]:
    """The two commands, as a user would type them, keyed by the URL each serves."""
    bin_dir = Path(sys.executable).parent
    return {
        f"http://{HOST}:{prefect_port}": [
            str(bin_dir / "prefect"), "server", "start", "--host", HOST, "--port", str(prefect_port),
        ],
        f"http://{HOST}:{mlflow_port}": [
            str(bin_dir / "mlflow"), "server", "--host", HOST, "--port", str(mlflow_port),
            "--backend-store-uri", f"sqlite:///{paths.mlflow_db}",
            "--default-artifact-root", paths.mlflow_artifacts.as_uri(),
        ],
    }


def serve(paths: Paths, prefect_port: int = 4200, mlflow_port: int = 5000) -> None:
    """Start both servers, print their URLs, and stop both on Ctrl-C or when either exits."""
    for name, port in (("Prefect", prefect_port), ("MLflow", mlflow_port)):
        if not port_is_free(port):
            flag = f"--{name.lower()}-port"
            raise NichetuneError(f"port {port} on {HOST} is taken (is {name} already running?); pass {flag} N")
    paths.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
    children = [subprocess.Popen(cmd) for cmd in server_commands(paths, prefect_port, mlflow_port).values()]
    print(f"Prefect UI: http://{HOST}:{prefect_port}\nMLflow UI:  http://{HOST}:{mlflow_port}\n"
          f"To send flow runs here: export PREFECT_API_URL=http://{HOST}:{prefect_port}/api\nCtrl-C stops both.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
