"""Validate: a Great Expectations suite over the ingested rows; a failure stops the pipeline with a summary."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config import ValidateParams
from tasks.errors import ValidationFailed

SUMMARY_FILE = "summary.json"
DOCS_DIR = "data_docs"


@dataclass(frozen=True)
class Check:
    """One expectation's outcome, in words a reviewer can read."""

    name: str
    success: bool
    observed: object = None
    unexpected: list = field(default_factory=list)

    def line(self) -> str:
        mark = "ok  " if self.success else "FAIL"
        found = f" (found {self.observed})" if self.observed is not None else ""
        examples = f" (e.g. {', '.join(map(repr, self.unexpected))})" if self.unexpected else ""
        return f"{mark} {self.name}{found}{examples}"


@dataclass(frozen=True)
class ValidationResult:
    success: bool
    checks: list[Check]
    rows: int
    summary: Path
    data_docs: Path | None

    def text(self) -> str:
        """A readable summary: how many checks passed, then one line per check."""
        failed = sum(not check.success for check in self.checks)
        head = f"validation {'passed' if self.success else 'FAILED'}: {len(self.checks) - failed} of "
        return "\n".join([head + f"{len(self.checks)} checks passed on {self.rows} rows",
                          *(check.line() for check in self.checks)])


def build_suite(cfg: ValidateParams, labels: list[str]):
    """The expectations, each with a readable name: text present and non-blank, labels known, enough per class."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    suite = [
        ("text is present", gxe.ExpectColumnValuesToNotBeNull(column="text")),
        ("text is not blank", gxe.ExpectColumnValuesToMatchRegex(column="text", regex=r"\S")),
        ("label is present", gxe.ExpectColumnValuesToNotBeNull(column="label")),
        ("two or more classes", gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2)),
    ]
    if cfg.labels:
        suite.append((f"label is one of the {len(cfg.labels)} known labels",
                      gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.labels))))
    for label in labels:  # Column(...) == label quotes the value safely, whatever characters it holds
        suite.append((f"at least {cfg.min_examples_per_class} examples of {label!r}",
                      gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_examples_per_class,
                                                         row_condition=Column("label") == label)))
    return suite


def validate_frame(frame: pd.DataFrame, cfg: ValidateParams, docs_dir: Path | None = None):
    """Run the suite on a dataframe in an ephemeral GX context; return the checks and the Data Docs index."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    labels = list(cfg.labels) or sorted(frame["label"].dropna().unique())
    named = build_suite(cfg, labels)
    suite = context.suites.add(gx.ExpectationSuite(name="nichetune_dataset"))
    for _, expectation in named:
        suite.add_expectation(expectation)
    batch = (context.data_sources.add_pandas("labeled").add_dataframe_asset("dataset")
             .add_batch_definition_whole_dataframe("all rows"))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="dataset", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    checks = [_check(name, outcome) for (name, _), outcome in zip(named, result.results)]
    return checks, _build_docs(context, docs_dir) if docs_dir else None


def run(cfg: ValidateParams, dataset: Path, out_dir: Path, source: str | None = None) -> ValidationResult:
    """Validate the ingested dataset; write summary.json and Data Docs; raise ValidationFailed on any failure.

    `source` names the user's file in the error (the dataset itself is an intermediate parquet)."""
    frame = pd.read_parquet(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    checks, docs = validate_frame(frame, cfg, out_dir / DOCS_DIR)
    result = ValidationResult(all(c.success for c in checks), checks, len(frame), out_dir / SUMMARY_FILE, docs)
    record = {"success": result.success, "rows": result.rows, "checks": [c.__dict__ for c in checks]}
    result.summary.write_text(json.dumps(record, indent=2, default=str))
    if not result.success:
        raise ValidationFailed(f"{source or dataset}: {result.text()}\n"
                               f"fix the data or the validate section of params.yaml; details: {result.summary}")
    return result


def _check(name: str, outcome) -> Check:
    details = outcome.result or {}
    observed = details.get("observed_value")
    if observed is None and details.get("unexpected_count"):
        observed = f"{details['unexpected_count']} bad rows"
    examples = sorted({str(value) for value in details.get("partial_unexpected_list") or []})[:5]
    return Check(name, bool(outcome.success), observed, examples)


def _build_docs(context, docs_dir: Path) -> Path:
    shutil.rmtree(docs_dir, ignore_errors=True)  # the index lists only this run; stale pages would mislead
    context.add_data_docs_site(site_name="nichetune", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    context.build_data_docs(site_names=["nichetune"])
    return docs_dir / "index.html"


def main() -> None:
    """`python -m tasks.validate`: the dvc.yaml stage."""
    from tasks.ingest import DATASET_FILE
    from tasks.stage import stage_main

    stage_main(lambda params, paths: run(
        params.validate, paths.stage("ingest") / DATASET_FILE, paths.stage("validate"), params.ingest.path
    ).text())


if __name__ == "__main__":
    main()
