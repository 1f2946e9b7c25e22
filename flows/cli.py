"""The `nichetune` command: parses arguments, checks params before any work, and starts the flow."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from flows.signals import exit_on_signals, mark_servers_started_here, stop_orphaned_servers, stopped_by_ctrl_c
from tasks.config import Params, Paths, load_params
from tasks.errors import NichetuneError, ValidationFailed
from tasks.progress import QUIET_ENV
from tasks.runtime import quiet_offline_defaults


def find_root(start: Path) -> Path:
    """The project root: the nearest folder at or above `start` that holds a .dvc folder."""
    for folder in [start, *start.parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return start


def _with_params(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("--params", default="params.yaml", help="params file (default: params.yaml in the project)")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override one value for this command, e.g. --set finetune.epochs=3 (repeatable)")
    return command


DESCRIPTION = """\
nichetune fine-tunes a small sentence model (MiniLM) on your own labeled texts for one
niche classification task. Each labeled batch is versioned (DVC) and checked (Great
Expectations); each run is a Prefect flow tracked in MLflow; each model is evaluated on a
holdout and for drift (Evidently) before a reviewer promotes it to champion."""

TYPICAL_ORDER = """\
typical order:
  nichetune ingest labeled.csv       store a labeled export as a new dataset version
  nichetune ingest texts.csv --unlabeled          store texts nobody labeled (the pool)
  nichetune run                      ingest, validate, fine-tune, evaluate, register
  nichetune promote --version N --reason WHY      a reviewer makes it the champion
  nichetune predict new.csv          label a file with the champion
  nichetune export                   the champion as a folder that runs without torch (ONNX)
  nichetune suggest                  which unlabeled texts to label next
  nichetune up                       or keep all of it running until Ctrl-C
  nichetune trials                   compare the settings in trials.grid
  nichetune bench quality            measure, and rewrite BENCHMARKS.md
Each command has its own --help; --params FILE and --set KEY=VALUE change params."""


def build_parser() -> argparse.ArgumentParser:
    """The `nichetune` parser: a description of the tool, the typical order of commands, one line per command."""
    parser = argparse.ArgumentParser(prog="nichetune", description=DESCRIPTION, epilog=TYPICAL_ORDER,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines (bars show "
                        "only on a terminal anyway)")
    commands = parser.add_subparsers(dest="command", required=True)
    _with_params(commands.add_parser("run", help="ingest, validate, fine-tune, evaluate, register"))
    trials = _with_params(commands.add_parser("trials", help="fine-tune each trials.grid setting, register the best"))
    trials.add_argument("--address", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (trials.address); "
                        "default: a LocalCluster on this machine")
    trials.add_argument("--workers", type=int, help="worker processes of that LocalCluster (trials.workers)")
    ingest = _with_params(commands.add_parser("ingest", help="store a labeled file as a new dataset version"))
    ingest.add_argument("path", type=Path, help="CSV, TSV, JSON, JSON Lines, Parquet or Excel (.xlsx) export from a "
                        "labeling tool (Label Studio and "
                        "Argilla exports as they come)")
    ingest.add_argument("--dataset", help="dataset (niche task) name; default: ingest.dataset from params")
    ingest.add_argument("--unlabeled", action="store_true", help="texts without labels, for the dataset's unlabeled "
                        "pool (ingest.text_column is needed; the timestamp, id and metadata columns are kept where the file has "
                        "them, and a label column is not); starts no training")
    consent = commands.add_parser("consent", help="mark a dataset not for training, or lift the mark")
    consent.add_argument("dataset", help="the dataset (ingest.dataset) to mark")
    which = consent.add_mutually_exclusive_group(required=True)
    which.add_argument("--not-for-training", action="store_true", help="runs refuse the dataset; files ingested "
                       "into it are still stored")
    which.add_argument("--allow", action="store_true", help="lift the mark")
    consent.add_argument("--reason", help="why (recorded in the mark; required with --not-for-training)")
    _with_params(commands.add_parser("validate", help="check the stored dataset (Great Expectations)"))
    ui = _with_params(commands.add_parser("ui", help="open the Prefect and MLflow UIs until Ctrl-C"))
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    up = commands.add_parser("up", help="run servers, UIs and retraining on new files")
    up.add_argument("--params", dest="params_files", action="append", default=[], metavar="FILE",
                    help="params file of one dataset (repeatable: one deployment each); default: params.yaml")
    up.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one value for every dataset's runs, as `run --set` (repeatable)")
    up.add_argument("--prefect-port", type=int, default=4200)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--interval", type=float, default=2.0, help="seconds between looks at data/incoming/")
    promote = _with_params(commands.add_parser("promote", help="a reviewer makes a version the champion"))
    promote.add_argument("--version", required=True, help="the registered model version to promote")
    promote.add_argument("--reviewer", help="who approves it (recorded on the version); against a tracking "
                         "server with a login, the login is recorded")
    promote.add_argument("--reason", required=True, help="why (recorded on the version)")
    promote.add_argument("--reject", action="store_true", help="record a rejection instead; aliases do not move")
    promote.add_argument("--reconsider", action="store_true",
                         help="promote a version a reviewer rejected or rolled back before (the gate still applies)")
    rollback = _with_params(commands.add_parser("rollback", help="give the champion alias back to the previous one"))
    rollback.add_argument("--reviewer", help="who rolls back (recorded on both versions); against a tracking "
                          "server with a login, the login is recorded")
    rollback.add_argument("--reason", required=True, help="why (recorded on both versions)")
    predict = _with_params(commands.add_parser("predict", help="label a file with a registered model (CSV out)"))
    predict.add_argument("path", type=Path,
                         help="CSV, TSV, JSON, JSON Lines, Parquet or Excel (.xlsx) holding ingest.text_column")
    predict.add_argument("--model", help="NAME@ALIAS, NAME/VERSION or models:/...; default: the champion of "
                         "register.model_name")
    predict.add_argument("--output", type=Path, help="the CSV to write; default: <stem>.predictions.csv beside it")
    suggest = _with_params(commands.add_parser("suggest", help="which unlabeled texts to label next (files for "
                                               "Label Studio, Argilla or a spreadsheet)"))
    suggest.add_argument("--dataset", help="default: ingest.dataset")
    suggest.add_argument("--n", type=int, help="texts in the batch (default: suggest.n)")
    suggest.add_argument("--strategy", choices=["uncertainty", "diverse", "random"],
                         help="default: suggest.strategy")
    suggest.add_argument("--model", help="NAME/VERSION, NAME@ALIAS or models:/...; default: the champion of "
                         "register.model_name")
    suggest.add_argument("--list", action="store_true", help="list the batches suggested so far and how many of "
                         "their texts have come back labeled, instead of suggesting more")
    export = _with_params(commands.add_parser("export", help="write a registered model as a folder that predicts "
                                              "with onnxruntime alone (no torch)"))
    export.add_argument("--model", help="NAME/VERSION, NAME@ALIAS or models:/...; default: the champion of "
                        "register.model_name")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the only format so far)")
    export.add_argument("--quantize", choices=["auto", "int8", "int8-weights", "none"], default="auto",
                        help="auto (default): the fastest that gives the torch model's label on 99.5%% of the "
                        "holdout rows; int8: fastest; int8-weights: weights only; none: exact")
    export.add_argument("--output", type=Path, help="the folder to write; default: "
                        "<workdir>/exports/<name>-v<version>-onnx")
    bench = commands.add_parser("bench", help="run a benchmark and regenerate BENCHMARKS.md")
    bench.add_argument("which", choices=list(BENCHMARKS),
                       help="quality, speed, growth, gpu, runtime (ONNX against torch), cores (two trainings on one "
                       "machine), memory (training memory), endtoend (time to a registered model), active (active "
                       "learning simulation), privacy (accuracy under differential privacy), servers (memory of "
                       "the servers `nichetune up` starts), or report (only regenerate)")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the benchmark's own options (--help lists them), e.g. --data DIR: the folder holding "
                            "the datasets (default ../shared/data beside the checkout)")
    return parser


BENCHMARKS = {"quality": "benchmarks.quality", "speed": "benchmarks.speed", "growth": "benchmarks.growth",
              "gpu": "benchmarks.gpu", "runtime": "benchmarks.runtime", "cores": "benchmarks.cores",
              "memory": "benchmarks.memory", "endtoend": "benchmarks.endtoend", "active": "benchmarks.active",
              "privacy": "benchmarks.privacy", "servers": "benchmarks.servers", "report": "benchmarks.report"}


def bench_command(args: argparse.Namespace) -> None:
    """Run one benchmark from the repository checkout, then rewrite BENCHMARKS.md from all raw results."""
    import importlib

    from benchmarks import report

    if args.which != "report":
        importlib.import_module(BENCHMARKS[args.which]).main(args.options)
    report.main(args.options if args.which == "report" else [])


def _project(args: argparse.Namespace) -> tuple[Params, Paths]:
    """The project root (nearest folder with .dvc) and its params, checked before any work."""
    root = find_root(Path.cwd())
    params_file = Path(args.params)
    params = load_params(params_file if params_file.is_absolute() else root / params_file, args.overrides)
    return params, Paths.of(root, params)


def ui_command(args: argparse.Namespace) -> None:
    from flows.ui import serve

    _, paths = _project(args)
    serve(paths, args.prefect_port, args.mlflow_port)


def up_command(args: argparse.Namespace) -> None:
    from flows.up import up

    root = find_root(Path.cwd())
    projects = []
    for name in args.params_files or ["params.yaml"]:
        file = Path(name) if Path(name).is_absolute() else root / name
        params = load_params(file, args.overrides)
        projects.append((params, Paths.of(root, params), file))
    up(projects, args.overrides, args.prefect_port, args.mlflow_port, args.interval)


def ingest_command(args: argparse.Namespace) -> None:
    from flows.events import emit_labeled
    from tasks.batches import LABELED, UNLABELED
    from tasks.ingest import ingest_batch

    params, paths = _project(args)
    source = args.path if args.path.is_absolute() else Path.cwd() / args.path
    store = UNLABELED if args.unlabeled else LABELED
    report = ingest_batch(params.ingest, params.validate.labels, paths.root, source, args.dataset, store=store)
    print(report.text())
    if report.events:
        print(emit_labeled(report))


def consent_command(args: argparse.Namespace) -> None:
    """Mark a dataset not for training, or lift the mark; print the git commands that commit the change."""
    from tasks import consent

    root = find_root(Path.cwd())
    if args.allow:
        print(consent.allowed_text(args.dataset, consent.allow(root, args.dataset)))
        return
    print(consent.marked_text(consent.mark(root, args.dataset, args.reason or "")))


def validate_command(args: argparse.Namespace) -> None:
    from tasks import ingest, validate

    params, paths = _project(args)
    dataset = ingest.run_stage(params, paths)  # what `dvc repro` runs before validating: the batches assembled
    try:
        result = validate.run(params.validate, dataset.dataset, paths.stage("validate"),
                              source=dataset.version["path"])
    except ValidationFailed as failed:
        print(failed.result.text())  # every check, as when it passes; the error line names the failed ones
        raise
    print(result.text())
    print(f"Data Docs: {result.data_docs}")


def promote_command(args: argparse.Namespace) -> None:
    from flows.review import registry_for

    from tasks import promote

    params, paths = _project(args)
    registry = registry_for(params, paths)
    reviewer, reason = promote.reviewer_identity(registry.uri, args.reviewer), promote.stated_reason(args.reason)
    with _registry_refusals(registry.uri, registry.name):
        if args.reject:
            print(registry.reject(args.version, reviewer, reason, via="nichetune promote --reject"))
        else:
            known = registry.recorded_comparison(args.version)
            print(promote.approve(registry, args.version, params.register, reviewer, reason,
                                  via="nichetune promote", known=known, reconsider=args.reconsider))


def rollback_command(args: argparse.Namespace) -> None:
    from flows.review import registry_for

    from tasks.promote import reviewer_identity, stated_reason

    params, paths = _project(args)
    registry = registry_for(params, paths)
    reviewer, reason = reviewer_identity(registry.uri, args.reviewer), stated_reason(args.reason)
    with _registry_refusals(registry.uri, registry.name):
        print(registry.rollback(reviewer, reason))


@contextmanager
def _registry_refusals(uri: str, name: str):
    """A tracking server that refuses (no permission, unreachable) is one line, not a traceback; so is a model
    nothing has registered yet."""
    from mlflow.exceptions import MlflowException

    from tasks.register import first_line

    try:
        yield
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise NichetuneError(f"{uri} holds no registered model {name!r} yet: `nichetune run` registers one "
                                 "(register.model_name in params.yaml names it)") from None
        raise NichetuneError(f"{uri} refused the change: {first_line(err)}; check MLFLOW_TRACKING_USERNAME/PASSWORD "
                             f"(reviewers need MANAGE on the model) and that the server is up") from None


def predict_command(args: argparse.Namespace) -> None:
    """Predict a file with a registered model; say where the CSV went and how many rows it holds."""
    from tasks.predict import model_uri, predict_file
    from tasks.register import tracking_uri

    params, paths = _project(args)
    source = args.path if args.path.is_absolute() else Path.cwd() / args.path
    output = args.output if args.output is None or args.output.is_absolute() else Path.cwd() / args.output
    written = predict_file(source, params.ingest, model_uri(args.model, params.register.model_name),
                           tracking_uri(paths), output)
    predicted = written.rows - len(written.blank_lines)
    print(f"{predicted} predictions by {written.model_uri} (version {written.version}) written to {written.output}")
    if written.blank_lines:
        count, shown = len(written.blank_lines), ", ".join(str(line) for line in written.blank_lines[:5])
        rows, them = ("rows have", "them") if count > 1 else ("row has", "it")
        print(f"{count} {rows} an empty text and no prediction (line{'s' * (count > 1)} {shown}"
              f"{', ...' if count > 5 else ''}); fill in {params.ingest.text_column!r} to have {them} predicted")


def suggest_command(args: argparse.Namespace) -> None:
    """Write the next batch of texts to label; say where, from how many, and by which model."""
    from tasks.batches import checked_dataset_name
    from tasks.layout import CACHE_DIR
    from tasks.predict import model_uri
    from tasks.register import tracking_uri
    from tasks.suggest import suggest

    params, paths = _project(args)
    if args.n is not None and args.n < 1:
        raise NichetuneError(f"--n {args.n}: ask for at least one text")
    dataset = checked_dataset_name(args.dataset or params.ingest.dataset)
    if args.list:
        list_suggestions(paths.root, dataset)
        return
    done = suggest(paths.root, dataset, model_uri(args.model, params.register.model_name), tracking_uri(paths),
                   args.strategy or params.suggest.strategy, args.n or params.suggest.n, params.suggest.shortlist,
                   params.base.seed, paths.workdir / "suggestions", params.ingest, paths.workdir / CACHE_DIR)
    folder = done.files["csv"].parent
    print(f"{done.rows} of {done.pool_rows} unlabeled texts suggested by {done.model} ({done.strategy}) in {folder}:")
    print(f"  {done.files['csv'].name} or {done.files['workbook'].name} (a spreadsheet), "
          f"{done.files['label_studio'].name} with "
          f"{done.files['label_studio_config'].name} (Label Studio), {done.files['argilla'].name} with "
          f"{done.files['argilla_script'].name} (Argilla)")
    print(f"recorded in {done.record.relative_to(paths.root)} (commit it); label them, export, and "
          "`nichetune ingest` the export")


def list_suggestions(root: Path, dataset: str) -> None:
    """One line per suggestion batch: when, by which model and strategy, how many texts came back labeled."""
    from tasks.suggest import RECORDS_DIR, history

    batches = history(root, dataset)
    if not batches:
        print(f"no suggestion batches recorded for dataset {dataset!r} yet; `nichetune suggest` writes one")
        return
    print(f"suggestion batches of {dataset} ({RECORDS_DIR / dataset}):")
    for batch in batches:
        pool = batch["pool_version"]
        print(f"  {batch['batch']:04d}  {batch['created_at']}  {batch['model']}  {batch['strategy']}: "
              f"{batch['labeled']} of {batch['asked']} labeled since (pool version "
              f"{str(pool.get('data_version'))[:8]}, {pool.get('rows', '?')} texts)")


def export_command(args: argparse.Namespace) -> None:
    """Export a registered model; say where, how it was quantized and how closely it follows the torch model."""
    from tasks.export import export_registered, verdict
    from tasks.predict import model_uri
    from tasks.register import tracking_uri

    params, paths = _project(args)
    output = args.output if args.output is None or args.output.is_absolute() else Path.cwd() / args.output
    done = export_registered(model_uri(args.model, params.register.model_name), tracking_uri(paths), paths.workdir,
                             args.quantize, output)
    for how, parity in done.tried.items():
        speed = f", {parity['rows_per_s']:.0f} rows/s here" if "rows_per_s" in parity else ""
        print(f"{how}: same label on {parity['agreement']:.2%} of {parity['rows']} holdout rows, probabilities "
              f"within {parity['p99_diff']:.3f} on 99% of them{speed} ({verdict(how, done.tried, done.quantization)})")
    print(f"exported ({done.quantization}, {done.megabytes:.0f} MB) to {done.folder}; see its README.md")


def start_temporary_prefect_server() -> threading.Thread | None:
    """Start the temporary Prefect server that the flow's first API call would start, from a thread, so that
    its start-up (a process of its own) overlaps the imports of torch and the stages; join it before the flow.
    None where a server is configured (PREFECT_API_URL). A failure is left for the flow's own start to report
    with Prefect's message, after the server that did not answer in time (the default allows 20 s, which the
    imports beside it can use up on a slow machine) is stopped: Prefect leaves it running, and the flow would
    start a second one on the same database beside it. The imports happen here, in the main thread: two
    threads importing Prefect at once can meet its modules half-initialised."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    from prefect.server.api.server import SubprocessASGIServer  # what the flow's first API call imports anyway

    def start() -> None:
        server = SubprocessASGIServer()
        try:
            server.start()
        except Exception:  # noqa: BLE001 - the flow starts the server again and raises Prefect's error
            server.stop()

    thread = threading.Thread(target=start, name="prefect-server-start", daemon=True)
    thread.start()
    return thread


def run_command(args: argparse.Namespace) -> None:
    params, paths = _project(args)
    params_file = Path(args.params)
    server = start_temporary_prefect_server()
    from flows.pipeline import hide_tracebacks_of_user_errors, train_pipeline  # loaded once params are good

    hide_tracebacks_of_user_errors()
    if server is not None:
        server.join()
    result = train_pipeline(root=str(paths.root), params_file=str(params_file), overrides=args.overrides)
    print(where_things_are(result, params, paths))


def trials_command(args: argparse.Namespace) -> None:
    """Run the trials flow on Dask; print every trial, then the closing lines of `nichetune run`."""
    if args.address:
        args.overrides.append(f"trials.address={json.dumps(args.address)}")  # quoted: YAML reads a string
    if args.workers is not None:
        args.overrides.append(f"trials.workers={args.workers}")
    params, paths = _project(args)
    from flows.pipeline import hide_tracebacks_of_user_errors  # loaded once params are good
    from flows.trials import run_trials, trial_table

    hide_tracebacks_of_user_errors()
    result = run_trials(root=str(paths.root), params_file=str(Path(args.params)), overrides=args.overrides)
    print("\n" + trial_table(result["trials"], params.trials.metric, result["best_trial"]))
    print(f"Trials:           {result['trials_file']}")
    print(where_things_are(result, params, paths))


def where_things_are(result: dict, params: Params, paths: Paths) -> str:
    """The closing lines of a run: the registered model, the reports, and how to open the UIs."""
    from flows.summary import holdout_text
    from tasks.register import tracking_uri

    uri = tracking_uri(paths)
    mlflow_ui = uri if uri.startswith("http") else "http://127.0.0.1:5000  (start it with `nichetune ui`)"
    prefect_ui = os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or (
        "http://127.0.0.1:4200  (start it with `nichetune ui`; this run is recorded there)"
    )
    return "\n".join([
        "",
        f"Registered model: models:/{result['model_name']}@{params.register.alias} "
        f"(version {result['version']}, MLflow run {result['run_id']})",
        f"  holdout {holdout_text(result['metrics'])}; {result['gate']}",
        *privacy_lines(result.get("tags", {})),
        f"Review:           {result['message']}",
        f"Reports:          {paths.stage('evaluate')}",
        f"MLflow store:     {uri}",
        f"MLflow UI:        {mlflow_ui}",
        f"Prefect UI:       {prefect_ui}",
    ])


def privacy_lines(tags: dict) -> list[str]:
    """For a private training (finetune.privacy), the budget it spent; nothing otherwise."""
    if tags.get("private") != "true":
        return []
    return [f"  trained privately: epsilon {float(tags['privacy_epsilon']):.2f} of {tags['privacy_target_epsilon']} "
            f"spent (delta {tags['privacy_delta']}, Opacus {tags['privacy_accountant']} accountant)"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `nichetune` console command."""
    args = build_parser().parse_args(argv)
    quiet_offline_defaults()
    mark_servers_started_here()
    stop_orphaned_servers()
    exit_on_signals()
    if args.quiet:  # an environment variable, so that DVC stages and Prefect runs started from here are quiet too
        os.environ[QUIET_ENV] = "1"
    try:
        commands = {"run": run_command, "ingest": ingest_command, "validate": validate_command, "ui": ui_command,
                    "bench": bench_command, "promote": promote_command, "rollback": rollback_command,
                    "predict": predict_command, "up": up_command, "trials": trials_command,
                    "consent": consent_command, "export": export_command,
                    "suggest": suggest_command}
        commands[args.command](args)
    except NichetuneError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Prefect has marked the run crashed; its traceback tells the user nothing
        stopped_by_ctrl_c()


if __name__ == "__main__":
    main()
