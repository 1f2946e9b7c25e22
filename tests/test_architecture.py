"""Imports go one way (tasks <- flows <- the CLI; benchmarks only from `nichetune bench`), and the stage table in
tasks/layout.py says what dvc.yaml says. Read with `ast`: imports inside functions count, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tasks.layout import STAGES
from tests.conftest import REPO

PACKAGES = ("tasks", "flows", "benchmarks")
WORKDIR = "${base.workdir}/"


def module_files() -> dict[str, Path]:
    """Every project module under tasks/, flows/ and benchmarks/, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = module_files()


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def imported_by(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(project module, import node) for every import in the tree, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]  # `from tasks import monitor`
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name not in PACKAGES:
                found.append((name, node))
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imported_by(parsed(path))} - {name} for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it (depth-first search over the graph)."""
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":  # an import back into the path that led here
                path = trail + [node]
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def enclosing_functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node inside a function, mapped to the name of the outermost function holding it."""
    inside = {}
    for top in ast.walk(tree):
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(top):
                inside.setdefault(node, top.name)
    return inside


def test_the_scan_sees_imports_inside_functions():
    edges = import_graph()
    assert "tasks.stage" in edges["tasks.ingest"]  # `main()` imports it in its body
    assert "tasks.predict" in edges["tasks.register"]  # `_log_model` imports it in its body


def test_project_modules_import_each_other_without_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_reports_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_tasks_never_import_flows_or_benchmarks():
    upward = {name: sorted(t for t in targets if not t.startswith("tasks."))
              for name, targets in import_graph().items() if name.startswith("tasks.")}
    assert {name: targets for name, targets in upward.items() if targets} == {}


def test_the_stage_table_imports_no_project_module_and_nothing_heavy():
    tree = parsed(REPO / "tasks" / "layout.py")
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "importlib", "dataclasses", "typing"}


def test_the_cli_imports_benchmarks_only_inside_the_bench_command():
    tree = parsed(REPO / "flows" / "cli.py")
    inside = enclosing_functions(tree)
    benchmark_imports = [node for target, node in imported_by(tree) if target.startswith("benchmarks")]
    dynamic = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"]
    assert benchmark_imports and dynamic  # the bench command does import them
    assert {inside.get(node, "<module level>") for node in benchmark_imports + dynamic} == {"bench_command"}


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def paths_of(entries: list) -> list[str]:
    """dvc.yaml's list entries as paths: a plain string, or the key of `{path: {cache: false}}`."""
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries or []]


def test_the_stage_table_names_the_stages_of_dvc_yaml_in_order():
    assert list(STAGES) == list(dvc_stages())


def test_each_stage_reads_and_writes_what_dvc_yaml_tracks():
    for name, spec in dvc_stages().items():
        stage = STAGES[name]
        deps = paths_of(spec["deps"])
        data = [dep for dep in deps if not dep.startswith("tasks/")]
        assert sorted(data) == sorted([WORKDIR + path for path in stage.inputs] + list(stage.sources)), name
        outputs = paths_of(spec.get("outs")) + paths_of(spec.get("metrics"))
        assert sorted(outputs) == sorted(WORKDIR + path for path in stage.outputs), name
        assert spec["params"] == list(stage.params), name


def test_each_stage_command_runs_the_function_the_table_names():
    for name, spec in dvc_stages().items():
        stage = STAGES[name]
        assert spec["cmd"].split() == ["python", "-m", stage.module], name
        module, _, function = stage.run.partition(":")
        tree = parsed((REPO / Path(*module.split("."))).with_suffix(".py"))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {function, "main"} <= defined, name


def test_each_stage_reads_only_what_an_earlier_stage_writes():
    written: set[str] = set()
    for stage in STAGES.values():
        for path in stage.inputs:
            assert any(path == out or path.startswith(out + "/") for out in written), (stage.name, path)
        written |= set(stage.outputs)
