"""`nichetune ui`: the Prefect and MLflow servers with their UIs, on this machine only, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.config import Paths
from tasks.errors import NichetuneError
from tasks.runtime import SERVER_DEFAULTS

HOST = "127.0.0.1"  # never exposed beyond this machine unless the user asks
START_TIMEOUT = 180  # seconds for both servers to answer their health checks (a first start migrates databases)
MLFLOW_WORKERS = 2  # one user's UI and runs; each more of MLflow's default 4 holds memory (bench servers)
# MLflow 3's server also starts a job runner and seven queue consumers for its GenAI jobs (online scoring, trace
# archival), which nichetune never uses (bench servers); an MLFLOW_SERVER_ENABLE_JOB_EXECUTION set by the user wins
QUIET_MLFLOW = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# one line per worker at its start, about an import inside MLflow that a user can do nothing about
MLFLOW_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated"


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
            # no line per request: a training run makes over a hundred, and they buried the flow's own lines
            "--workers", str(MLFLOW_WORKERS), "--uvicorn-opts", "--no-access-log",
        ],
    }


class Servers:
    """The Prefect and MLflow servers as child processes: started together, stopped together."""

    def __init__(self, paths: Paths, prefect_port: int = 4200, mlflow_port: int = 5000):
        for name, port in (("Prefect", prefect_port), ("MLflow", mlflow_port)):
            if not port_is_free(port):
                flag = f"--{name.lower()}-port"
                raise NichetuneError(f"port {port} on {HOST} is taken (is {name} already running?); pass {flag} N")
        self.prefect = f"http://{HOST}:{prefect_port}"
        self.mlflow = f"http://{HOST}:{mlflow_port}"
        paths.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        # The Prefect UI asks the API at PREFECT_UI_API_URL, which otherwise assumes port 4200
        env = {**QUIET_MLFLOW, **SERVER_DEFAULTS, **os.environ, "PREFECT_UI_API_URL": f"{self.prefect}/api",
               "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), MLFLOW_WARNINGS]))}
        # Each in its own process group: `mlflow server` runs uvicorn as a child of its own, which must stop too
        self.children = [subprocess.Popen(cmd, env=env, start_new_session=True)
                         for cmd in server_commands(paths, prefect_port, mlflow_port).values()]

    def running(self) -> bool:
        return all(child.poll() is None for child in self.children)

    def wait_until_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Block until both answer their health checks; fail with one line if either exits or never answers."""
        deadline = time.monotonic() + timeout
        for url in (f"{self.prefect}/api/health", f"{self.mlflow}/health"):
            while not _answers(url):
                if not self.running():
                    self.stop()
                    raise NichetuneError(f"a server exited while starting ({url} never answered); see its log above")
                if time.monotonic() > deadline:
                    self.stop()
                    raise NichetuneError(f"{url} did not answer within {timeout:.0f} s; see the servers' log above")
                time.sleep(0.5)

    def stop(self) -> None:
        for child in self.children:
            _signal_group(child, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
            _signal_group(child, signal.SIGKILL)  # anything of its group still alive


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_on_signals() -> None:
    """SIGTERM (a service manager, `kill`) and SIGHUP (its terminal closed) end the process through the same
    cleanup as Ctrl-C, which stops the servers: they run in sessions of their own, which no signal to this one
    reaches. Ctrl-C works even when started from a shell's background job, which starts it with SIGINT
    ignored; SIGHUP ignored at the start (`nohup`) stays ignored, as the user asked."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)


def serve(paths: Paths, prefect_port: int = 4200, mlflow_port: int = 5000) -> None:
    """Start both servers, print their URLs, and stop both on Ctrl-C or when either exits."""
    servers = Servers(paths, prefect_port, mlflow_port)
    stop_on_signals()
    try:
        servers.wait_until_healthy()
        print(f"Prefect UI: {servers.prefect}\nMLflow UI:  {servers.mlflow}\n"
              f"To send flow runs here: export PREFECT_API_URL={servers.prefect}/api\nCtrl-C stops both.", flush=True)
        while servers.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()
