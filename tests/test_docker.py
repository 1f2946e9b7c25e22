"""docker/: the compose file and images for the team servers. No Docker engine runs here, so these tests read
the files: what the compose file publishes and where, what each image installs against requirements.lock and
the Makefile, which variables .env.example must define, and that no secret is committed. `docker compose
config` validates the file too where the CLI and its compose plugin are installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SERVERS = {"postgres", "minio", "minio-init", "prefect-server", "mlflow", "worker"}
ONE_SHOT = {"minio-init"}  # runs to completion; needs no health check
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN|AUTH_STRING", re.IGNORECASE)
PLACEHOLDER = "change-me"


# --- reading the files ---------------------------------------------------------------------------------------

def normalize(name: str) -> str:
    """A package name as pip compares it (PEP 503): case, `_` and `.` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file (extras dropped), keyed by normalized name."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            found[normalize(name.split("[")[0])] = version.strip()
    return found


def env_example() -> dict[str, str]:
    """The variables .env.example defines, with their example values."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` with `env`, and `$$` as a literal `$`."""
    def value(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if op.startswith(":-") or op.startswith("-"):
            return env.get(name) or arg if op.startswith(":") else env.get(name, arg)
        if name not in env or (op.startswith(":?") and not env[name]):
            raise KeyError(f"{name}: {arg or 'required'}")
        return env[name]

    text = re.sub(r"(?<!\$)\$\{(\w+)(:?[-?])?([^}]*)\}", value, text)
    return text.replace("$$", "$")


def compose(env: dict[str, str] | None = None) -> dict:
    """compose.yaml after interpolation with `env` (by default .env.example's values)."""
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env_example() if env is None else env))


def services() -> dict:
    return compose()["services"]


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The arguments of each `pip install` the Dockerfile runs, in order."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    runs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("RUN ")]
    commands = [shlex.split(part) for run in runs for part in run.split("&&")]
    return [args[args.index("install") + 1:] for args in commands if "pip" in args and "install" in args]


def requirements_of(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(requirement specs, files given with -r, files given with -c) of one pip install."""
    specs, reqs, constraints = [], [], []
    takes_value = {"-r": reqs, "-c": constraints, "--index-url": [], "--extra-index-url": []}
    items = iter(args)
    for arg in items:
        if arg in takes_value:
            takes_value[arg].append(Path(next(items)).name)
        elif not arg.startswith("-") and arg != ".":
            specs.append(arg)
    return specs, reqs, constraints


def makefile_installs() -> list[list[str]]:
    """The arguments of each `pip install` of the Makefile's install recipe, in order."""
    lines = (REPO / "Makefile").read_text().splitlines()
    return [shlex.split(line.split("pip install", 1)[1]) for line in lines if "pip install" in line]


LOCK = pins(REPO / "requirements.lock")


# --- the compose file ----------------------------------------------------------------------------------------

def test_compose_file_parses_with_the_expected_services():
    assert set(services()) == SERVERS
    declared = set(compose()["volumes"])
    for name, service in services().items():
        named = {volume.split(":")[0] for volume in service.get("volumes", []) if not volume.startswith(".")}
        assert named <= declared, f"{name} mounts undeclared volumes {named - declared}"


def test_published_ports_bind_localhost_unless_configured():
    for env in ({}, env_example()):  # compose's defaults, and the example .env
        for name, service in compose(env | _required_placeholders())["services"].items():
            for port in service.get("ports", []):
                host_ip = str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else None
                assert host_ip == "127.0.0.1", f"{name} publishes {port!r}: bind it to 127.0.0.1"
    assert "ports" not in services()["postgres"], "only the servers talk to Postgres"
    assert "ports" not in services()["worker"]


def test_ports_and_bind_address_come_from_env_vars_with_defaults():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, service in raw.items():
        for port in service.get("ports", []):
            assert re.fullmatch(r"\$\{BIND_ADDRESS:-127\.0\.0\.1\}:\$\{\w+_PORT:-\d+\}:\d+", port), (name, port)


def test_depends_on_names_defined_services_with_a_way_to_be_ready():
    for name, service in services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVERS, f"{name} depends on undefined service {dependency!r}"
            if dependency in ONE_SHOT:
                assert condition["condition"] == "service_completed_successfully", (name, dependency)
            else:
                assert condition["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services()[dependency], f"{dependency} has no health check"


def test_every_server_has_a_health_check_and_restarts():
    for name, service in services().items():
        if name not in ONE_SHOT:
            assert service["healthcheck"]["test"], name
            assert service["restart"] == "unless-stopped", name


def test_worker_reserves_an_nvidia_gpu_and_polls_the_pool_the_deployment_names():
    worker = services()["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    command = worker["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    pool = command[command.index("--pool") + 1]
    assert command[command.index("--type") + 1] == "process"
    deployment = yaml.safe_load((DOCKER / "prefect.yaml").read_text())["deployments"][0]
    assert deployment["work_pool"]["name"] == pool
    path, function = deployment["entrypoint"].split(":")
    assert f"def {function}(" in (REPO / path).read_text(), deployment["entrypoint"]


def test_servers_use_postgres_and_minio():
    env = services()
    assert env["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://prefect:")
    mlflow = env["mlflow"]["environment"]
    assert mlflow["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] is False  # as nichetune up starts it
    assert env["prefect-server"]["command"][-4:] == ["--host", "0.0.0.0", "--port", "4200"]
    init = (DOCKER / "postgres" / "init-databases.sh").read_text()
    assert "create_role_and_databases prefect" in init and "create_role_and_databases mlflow" in init


# --- images and what they install ----------------------------------------------------------------------------

def test_every_image_is_pinned():
    images = [service["image"] for service in services().values()]
    images += [line.split()[1] for dockerfile in DOCKERFILES
               for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), f"{image}: pin a tag other than latest"


def test_built_images_are_tagged_with_the_versions_they_install():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert services()["prefect-server"]["image"] == f"nichetune-prefect:{LOCK['prefect']}"
    assert services()["mlflow"]["image"] == f"nichetune-mlflow:{LOCK['mlflow']}"
    assert services()["worker"]["image"] == f"nichetune-worker:{project['version']}"


def test_dockerfiles_install_the_versions_of_requirements_lock():
    for dockerfile in DOCKERFILES:
        installs = pip_installs(dockerfile)
        assert installs, f"{dockerfile.name} installs nothing with pip"
        for args in installs:
            specs, _, _ = requirements_of(args)
            for spec in specs:
                name, sep, version = spec.partition("==")
                assert sep, f"{dockerfile.name}: {spec!r} is not pinned with =="
                assert LOCK.get(normalize(name)) == version, (
                    f"{dockerfile.name} installs {spec}, requirements.lock has {LOCK.get(normalize(name))}")


def test_extra_requirements_are_pinned_and_never_override_the_lock():
    for path in DOCKER.glob("requirements-*.txt"):
        overlap = set(pins(path)) & set(LOCK)
        assert not overlap, f"{path.name} pins {overlap}, which requirements.lock already pins"
    for dockerfile in DOCKERFILES:
        for args in pip_installs(dockerfile):
            _, reqs, constraints = requirements_of(args)
            extras = [name for name in reqs if name != "requirements.lock"]
            for name in extras:
                assert (DOCKER / name).is_file(), f"{dockerfile.name} installs -r {name}, which docker/ lacks"
                assert "requirements.lock" in constraints + reqs, (
                    f"{dockerfile.name}: install {name} with -c requirements.lock so no locked version moves")


def test_server_images_install_mlflow_and_prefect_as_locked():
    for dockerfile, package in (("mlflow.Dockerfile", "mlflow"), ("prefect.Dockerfile", "prefect")):
        specs = [spec for args in pip_installs(DOCKER / dockerfile) for spec in requirements_of(args)[0]]
        assert f"{package}=={LOCK[package]}" in specs, dockerfile
    mlflow_extras = pins(DOCKER / "requirements-mlflow.txt")
    assert {"psycopg", "boto3", "flask-wtf"} <= set(mlflow_extras), "Postgres, S3 and basic-auth drivers"


def test_worker_installs_torch_then_the_lock_then_the_project_like_the_makefile():
    make = makefile_installs()
    torch_pin = next(arg for args in make for arg in args if arg.startswith("torch=="))
    assert torch_pin == f"torch=={LOCK['torch']}"
    steps = pip_installs(DOCKER / "worker.Dockerfile")
    first_torch = next(i for i, args in enumerate(steps) if torch_pin in args)
    lock = next(i for i, args in enumerate(steps) if requirements_of(args)[1] == ["requirements.lock"])
    project = next(i for i, args in enumerate(steps) if "--no-deps" in args and "." in args)
    assert first_torch == 0 and first_torch < lock < project == len(steps) - 1, steps
    assert steps[0] == [torch_pin, "--index-url", '$TORCH_INDEX_URL'], "torch alone, from PyTorch's index"
    make_order = [next(i for i, args in enumerate(make) if marker(args)) for marker in (
        lambda args: torch_pin in args, lambda args: "requirements.lock" in args, lambda args: "--no-deps" in args)]
    assert make_order == sorted(make_order), "the Makefile's own order changed: update worker.Dockerfile"


# --- variables and secrets -----------------------------------------------------------------------------------

def test_every_variable_compose_uses_is_defined_in_env_example():
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert not re.findall(r"(?<!\$)\$[A-Za-z_]", text.replace("$$", "")), "use ${VAR}, or $$VAR for the container"
    defined = set(env_example())
    assert used <= defined, f"compose.yaml uses {used - defined}, which .env.example does not define"
    unused = defined - used - {"COMPOSE_PROFILES"}  # that one is read by compose itself
    assert not unused, f".env.example defines {unused}, which compose.yaml does not use"
    compose(env_example())  # every required variable has a value


def test_no_secret_is_committed():
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value == "" or value.startswith(PLACEHOLDER), f".env.example: {key} must be a placeholder"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, service in raw.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", str(value)), f"{name}.{key}: read it from .env"
    for path in DOCKER.rglob("*"):
        if path.is_file() and path.name != ".env":
            text = path.read_text()
            assert not re.search(r"^\s*admin_password\s*=", text, re.MULTILINE), f"{path}: admin password"
            assert not re.search(r"://\w+:(?!\$\{)[^@/\s]+@", text), f"{path}: a password in a URL"


def test_real_env_file_is_git_ignored():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0, "docker/.env would be committed: docker/.gitignore must list .env"


def test_basic_auth_ini_reads_secrets_from_the_environment():
    ini = (DOCKER / "mlflow" / "basic_auth.ini").read_text()
    assert re.search(r"^database_uri = postgresql://mlflow@postgres:5432/mlflow_auth$", ini, re.MULTILINE)
    mlflow = services()["mlflow"]["environment"]
    assert mlflow["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert "PGPASSWORD" in mlflow and "MLFLOW_AUTH_ADMIN_PASSWORD" in mlflow


def test_the_prefect_server_requires_a_login_and_every_client_sends_it():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    server = raw["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert re.fullmatch(r"\$\{PREFECT_AUTH_STRING:\?[^}]+\}", server), "required: an empty value is a login too"
    clients = [name for name, service in raw.items() if "PREFECT_API_URL" in (service.get("environment") or {})]
    assert clients == ["worker"]
    for name in clients:
        assert raw[name]["environment"]["PREFECT_API_AUTH_STRING"] == server, name
    assert env_example()["PREFECT_AUTH_STRING"].count(":") == 1, "user:password"


def test_prefect_reads_the_auth_settings_compose_sets(monkeypatch):
    from prefect.settings import Settings

    env = services()
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", env["prefect-server"]["environment"]
                       ["PREFECT_SERVER_API_AUTH_STRING"])
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", env["worker"]["environment"]["PREFECT_API_AUTH_STRING"])
    settings = Settings()
    assert settings.server.api.auth_string.get_secret_value() == env_example()["PREFECT_AUTH_STRING"]
    assert settings.api.auth_string.get_secret_value() == env_example()["PREFECT_AUTH_STRING"]


def test_the_prefect_server_keeps_its_concurrency_leases_on_a_volume(monkeypatch):
    """In the server's memory, leases die with a restart, and the training slot of a run killed meanwhile stays
    taken: the same lease storage as the servers nichetune starts on one machine, on a volume it can write."""
    import importlib

    from prefect.server.concurrency.lease_storage import filesystem
    from prefect.settings import Settings

    from tasks.runtime import SERVER_DEFAULTS

    server = services()["prefect-server"]
    key = "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"
    assert server["environment"][key] == SERVER_DEFAULTS[key]
    monkeypatch.setenv(key, server["environment"][key])
    storage = importlib.import_module(Settings().server.concurrency.lease_storage)
    assert storage.ConcurrencyLeaseStorage is filesystem.ConcurrencyLeaseStorage
    assert "prefect-home:/home/prefect/.prefect" in server["volumes"]
    dockerfile = (DOCKER / "prefect.Dockerfile").read_text()
    assert dockerfile.index("USER 1000") < dockerfile.index("RUN mkdir /home/prefect/.prefect")


def test_mlflow_and_dvc_use_separate_s3_users():
    env, example = services(), env_example()
    mlflow, worker = env["mlflow"]["environment"], env["worker"]["environment"]
    assert mlflow["AWS_ACCESS_KEY_ID"] == example["MLFLOW_S3_ACCESS_KEY"]
    assert mlflow["AWS_SECRET_ACCESS_KEY"] == example["MLFLOW_S3_SECRET_KEY"]
    assert worker["AWS_ACCESS_KEY_ID"] == example["DVC_S3_ACCESS_KEY"]  # the worker's S3 use is `dvc pull`
    assert worker["AWS_SECRET_ACCESS_KEY"] == example["DVC_S3_SECRET_KEY"]
    assert example["MLFLOW_S3_ACCESS_KEY"] != example["DVC_S3_ACCESS_KEY"]
    init = env["minio-init"]
    script = next(volume.split(":")[1] for volume in init["volumes"] if volume.startswith("./minio/init.sh:"))
    assert init["entrypoint"] == ["/bin/sh", script] and "command" not in init
    needed = set(re.findall(r'"\$\{(\w+):\?\}"', (DOCKER / "minio" / "init.sh").read_text()))
    assert needed and needed <= set(init["environment"]), needed - set(init["environment"])


def run_minio_init(tmp_path: Path, **changes: str) -> tuple[subprocess.CompletedProcess, list[list[str]], dict]:
    """docker/minio/init.sh with .env.example's values and an `mc` on PATH that records its arguments and
    keeps each policy file it is given; returns the run, the mc calls and the policies by name."""
    log, policies = tmp_path / "mc.log", tmp_path / "policies"
    policies.mkdir()
    fake = tmp_path / "mc"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                    f'if [ "$1 $2 $3" = "admin policy create" ]; then cp "$6" {policies}/"$5".json; fi\n')
    fake.chmod(0o755)
    env = {**{key: value for key, value in services()["minio-init"]["environment"].items()}, **changes,
           "PATH": f"{tmp_path}:/usr/bin:/bin"}
    done = subprocess.run(["sh", str(DOCKER / "minio" / "init.sh")], env=env, capture_output=True, text=True)
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    found = {path.stem: json.loads(path.read_text()) for path in policies.glob("*.json")}
    return done, calls, found


def test_minio_init_gives_each_s3_user_a_policy_scoped_to_its_bucket(tmp_path):
    done, calls, policies = run_minio_init(tmp_path)
    assert done.returncode == 0, done.stderr
    example = env_example()
    users = {example["MLFLOW_S3_ACCESS_KEY"]: example["MLFLOW_BUCKET"],
             example["DVC_S3_ACCESS_KEY"]: example["DVC_BUCKET"]}
    attached = {call[-1]: call[4] for call in calls if call[:3] == ["admin", "policy", "attach"]}
    assert attached == {user: f"nichetune-{bucket}" for user, bucket in users.items()}
    assert {call[4] for call in calls if call[:3] == ["admin", "user", "add"]} == set(users)
    for bucket in users.values():
        statements = policies[f"nichetune-{bucket}"]["Statement"]
        resources = {resource for statement in statements for resource in statement["Resource"]}
        assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
        assert all(statement["Effect"] == "Allow" for statement in statements)
        actions = {action for statement in statements for action in statement["Action"]}
        assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject"} <= actions
        assert all(action.startswith("s3:") and "*" not in action and "Policy" not in action for action in actions)
    assert not [call for call in calls if call[:3] == ["admin", "policy", "attach"] and "readwrite" in call]


def test_minio_init_refuses_one_user_for_both_buckets(tmp_path):
    example = env_example()
    done, calls, _ = run_minio_init(tmp_path, DVC_S3_ACCESS_KEY=example["MLFLOW_S3_ACCESS_KEY"])
    assert done.returncode == 1 and "DVC_S3_ACCESS_KEY" in done.stderr and not calls


# --- the scripts ---------------------------------------------------------------------------------------------

def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """docker/mlflow/serve.sh with an `mlflow` on PATH that prints the arguments it was given."""
    fake = tmp_path / "mlflow"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    environment = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MLFLOW_ALLOWED_HOSTS": "localhost:*,mlflow:*", **env}
    return subprocess.run(["sh", str(DOCKER / "mlflow" / "serve.sh")], env=environment,
                          capture_output=True, text=True)


def test_mlflow_serve_adds_basic_auth_only_when_asked(tmp_path):
    plain = run_serve(tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["server", "--host", "0.0.0.0", "--port", "5000",
                                    "--allowed-hosts", "localhost:*,mlflow:*"]
    secured = run_serve(tmp_path, MLFLOW_AUTH="true", MLFLOW_AUTH_ADMIN_PASSWORD="a" * 16,
                        MLFLOW_FLASK_SERVER_SECRET_KEY="b" * 16)
    assert secured.returncode == 0, secured.stderr
    assert secured.stdout.split()[-2:] == ["--app-name", "basic-auth"]


def test_mlflow_serve_refuses_auth_without_its_secrets(tmp_path):
    missing = run_serve(tmp_path, MLFLOW_AUTH="true")
    assert missing.returncode == 1 and "MLFLOW_AUTH_ADMIN_PASSWORD" in missing.stderr
    typo = run_serve(tmp_path, MLFLOW_AUTH="yes")
    assert typo.returncode == 1 and "true or false" in typo.stderr


def test_shell_scripts_parse():
    for shell, script in (("sh", "mlflow/serve.sh"), ("bash", "postgres/init-databases.sh"), ("sh", "minio/init.sh")):
        checked = subprocess.run([shell, "-n", str(DOCKER / script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


# --- the docker CLI, where it is installed -------------------------------------------------------------------

def compose_cli() -> list[str] | None:
    """`docker compose` (the CLI plugin) or a standalone Compose v2 binary, whichever works here."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]):
            version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
            if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
                return command
    return None


def test_docker_compose_config_accepts_the_file():
    command = compose_cli()
    if command is None:
        pytest.skip("no `docker compose` here (the docker CLI's compose plugin, or docker-compose v2): "
                    "the file's structure is checked by the tests above")
    checked = subprocess.run(
        [*command, "--env-file", str(ENV_EXAMPLE), "--file", str(COMPOSE_FILE), "--profile", "gpu",
         "config", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "COMPOSE_PROFILES": ""})
    assert checked.returncode == 0, checked.stderr


def _required_placeholders() -> dict[str, str]:
    """A value for each variable compose.yaml requires (`${VAR:?...}`), so that defaults alone can be read."""
    names = re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text())
    return {name: PLACEHOLDER for name in names}


def test_mlflow_answers_the_public_host_behind_a_proxy_on_its_default_port():
    from mlflow.server.security_utils import is_allowed_host_header

    env = {**env_example(), "PUBLIC_HOST": "ml.example.com"}
    allowed = compose(env)["services"]["mlflow"]["environment"]["MLFLOW_ALLOWED_HOSTS"].split(",")
    for host in ("ml.example.com", "ml.example.com:443", "ml.example.com:5000", "mlflow:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com")


def test_the_deployment_trains_one_run_at_a_time_and_validates_as_prefect_reads_it():
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load((DOCKER / "prefect.yaml").read_text()))
    assert [deployment.concurrency_limit for deployment in model.deployments] == [1]


def test_a_worker_without_its_dvc_endpoint_stops_at_the_first_pull_step_saying_so(monkeypatch):
    import asyncio

    from prefect.deployments.steps.utility import run_shell_script

    step = yaml.safe_load((DOCKER / "prefect.yaml").read_text())["pull"][1]["prefect.deployments.steps.run_shell_script"]
    check = step["script"].splitlines()[0]  # the lines after it need dvc and a clone
    assert step["expand_env_vars"] is True
    monkeypatch.delenv("DVC_S3_ENDPOINT", raising=False)
    with pytest.raises(RuntimeError, match="DVC_S3_ENDPOINT is not set on this worker"):
        asyncio.run(run_shell_script(script=check, expand_env_vars=True))
    monkeypatch.setenv("DVC_S3_ENDPOINT", "http://minio:9000")
    assert asyncio.run(run_shell_script(script=check, expand_env_vars=True))["stderr"] == ""
