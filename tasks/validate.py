"""Validate: a Great Expectations suite over the ingested rows; a failure stops the pipeline with a summary."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.config import Params, Paths, ValidateParams
from tasks.errors import ValidationFailed
from tasks.ingest import KEY, text_key
from tasks.layout import DATASET_FILE, DOCS_DIR, MARKDOWN_FILE, SUMMARY_FILE

CONFLICT = "_label_conflict"


@dataclass(frozen=True)
class Check:
    """One expectation's outcome, in words a reviewer can read."""

    name: str
    success: bool
    observed: object = None
    unexpected: list = field(default_factory=list)
    group: str = ""  # the params.yaml `validate.severity` key it answers to
    severity: str = "fail"  # fail: a failure stops the run; warn: it is only reported

    def line(self) -> str:
        mark = "ok  " if self.success else ("FAIL" if self.severity == "fail" else "warn")
        found = f" (found {self.observed})" if self.observed is not None else ""
        examples = f" (e.g. {', '.join(map(repr, self.unexpected))})" if self.unexpected else ""
        return f"{mark} {self.name}{found}{examples}"


@dataclass(frozen=True)
class ValidationResult:
    success: bool  # no check whose severity is `fail` failed
    checks: list[Check]
    rows: int
    summary: Path
    data_docs: Path | None

    def text(self) -> str:
        """A readable summary: how many checks passed, then one line per check."""
        passed = sum(check.success for check in self.checks)
        warned = sum(not check.success and check.severity == "warn" for check in self.checks)
        head = f"validation {'passed' if self.success else 'FAILED'}: {passed} of {len(self.checks)} checks passed"
        head += f" ({warned} warning{'s' * (warned != 1)})" if warned else ""
        return "\n".join([f"{head} on {self.rows} rows", *(check.line() for check in self.checks)])

    def warnings(self) -> str:
        """The summary's first line and the checks that failed as warnings only (they do not stop a run)."""
        warned = [check.line() for check in self.checks if not check.success and check.severity == "warn"]
        return "\n".join([self.text().splitlines()[0], *warned])

    def failures(self) -> str:
        """The summary's first line and the failed checks that stop a run; the rest counted, not listed."""
        failed = [check.line() for check in self.checks if not check.success and check.severity == "fail"]
        warned = sum(not check.success and check.severity == "warn" for check in self.checks)
        rest = len(self.checks) - len(failed)
        others = f"{rest} other checks ({warned} warning{'s' * (warned != 1)})" if warned else f"{rest} other checks"
        return "\n".join([self.text().splitlines()[0], *failed, f"{others}: `nichetune validate` lists every one"])

    def markdown(self) -> str:
        """The same summary as a markdown table, for the Prefect UI."""
        rows = [f"| {c.line()[:4].strip()} | {c.name} | {'' if c.observed is None else c.observed} | "
                f"{', '.join(map(str, c.unexpected))} |" for c in self.checks]
        return "\n".join([f"**{self.text().splitlines()[0]}**", "", "| result | check | found | examples |",
                          "|---|---|---|---|", *rows, "", f"Data Docs: `{self.data_docs}`"])


def build_suite(cfg: ValidateParams, labels: list[str], previous: pd.Series | None = None):
    """(name, severity key, expectation) for each check: schema, non-null, label set, text length, duplicates,
    conflicting labels, class count and share, and label shift against the previous dataset version."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    suite = [
        ("text and label columns exist", "schema",
         gxe.ExpectTableColumnsToMatchSet(column_set=["text", "label"], exact_match=False)),
        ("text is present", "not_null", gxe.ExpectColumnValuesToNotBeNull(column="text")),
        ("text is not blank", "not_null", gxe.ExpectColumnValuesToMatchRegex(column="text", regex=r"\S")),
        ("label is present", "not_null", gxe.ExpectColumnValuesToNotBeNull(column="label")),
        ("two or more classes", "class_count", gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2)),
        (f"text at most {cfg.max_text_chars:,} characters", "text_length",
         gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, max_value=cfg.max_text_chars)),
        (f"at most {cfg.max_duplicate_rate:.0%} of rows repeat a text", "duplicates",
         gxe.ExpectColumnValuesToBeUnique(column=KEY, mostly=1 - cfg.max_duplicate_rate)),
        ("no text labeled two ways", "conflicts", gxe.ExpectColumnValuesToBeInSet(column=CONFLICT, value_set=[False])),
    ]
    if cfg.labels:
        suite.append((f"label is one of the {len(cfg.labels)} known labels", "label_set",
                      gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.labels))))
    for label in labels:  # Column(...) == label quotes the value safely, whatever characters it holds
        suite.append((f"at least {cfg.min_examples_per_class} examples of {label!r}", "class_count",
                      gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_examples_per_class,
                                                         row_condition=Column("label") == label)))
        if cfg.min_class_share > 0:
            suite.append((f"at least {cfg.min_class_share:.0%} of rows are {label!r}", "class_share",
                          gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[label],
                                                          mostly=cfg.min_class_share)))
    if previous is not None and len(previous):
        # half a row for every label keeps a label new in this version from making the divergence infinite
        counts = previous.value_counts().reindex(labels, fill_value=0) + 0.5
        weights = (counts / counts.sum()).tolist()
        suite.append((f"label mix within KL {cfg.max_label_shift} of the previous version", "label_shift",
                      gxe.ExpectColumnKLDivergenceToBeLessThan(
                          column="label", threshold=cfg.max_label_shift,
                          partition_object={"values": list(labels), "weights": weights})))
    return suite


def with_check_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns that duplicate and conflict checks read: a whitespace-normalised text key,
    and whether that key carries more than one label."""
    key = frame[KEY] if KEY in frame else text_key(frame["text"].astype("string"))  # ingest's: the text as given
    labels_per_key = frame.groupby(key, dropna=True)["label"].transform("nunique")
    return frame.assign(**{KEY: key, CONFLICT: labels_per_key.fillna(1).astype(int) > 1})


def previous_labels(frame: pd.DataFrame) -> pd.Series | None:
    """The labels of the dataset's previous version: every batch but the newest (None with one batch)."""
    if "_batch" not in frame or frame["_batch"].nunique() < 2:
        return None
    return frame.loc[frame["_batch"] != frame["_batch"].iloc[-1], "label"]  # batches come in order of arrival


def validate_frame(frame: pd.DataFrame, cfg: ValidateParams, docs_dir: Path | None = None):
    """Run the suite on a dataframe in an ephemeral GX context; return the checks and the Data Docs index."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    labels = list(cfg.labels) or sorted(frame["label"].dropna().unique())
    named = build_suite(cfg, labels, previous_labels(frame))
    severity = cfg.severity.model_dump(by_alias=True)
    suite = context.suites.add(gx.ExpectationSuite(name="nichetune_dataset"))
    for _, group, expectation in named:
        expectation.severity = "warning" if severity[group] == "warn" else "critical"  # shown in Data Docs
        suite.add_expectation(expectation)
    batch = (context.data_sources.add_pandas("labeled").add_dataframe_asset("dataset")
             .add_batch_definition_whole_dataframe("all rows"))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="dataset", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": with_check_columns(frame)}, result_format="SUMMARY")
    outcomes = {outcome.expectation_config.id: outcome for outcome in result.results}  # GX reorders them
    checks = [_check(name, group, severity[group], outcomes[expectation.id])
              for name, group, expectation in named]
    return checks, _build_docs(context, docs_dir) if docs_dir else None


def run(cfg: ValidateParams, dataset: Path, out_dir: Path, source: str | None = None) -> ValidationResult:
    """Validate the ingested dataset; write summary.json and Data Docs; raise ValidationFailed on any failure.

    `source` names the user's file in the error (the dataset itself is an intermediate parquet)."""
    frame = pd.read_parquet(dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    checks, docs = validate_frame(frame, cfg, out_dir / DOCS_DIR)
    success = all(check.success or check.severity == "warn" for check in checks)
    result = ValidationResult(success, checks, len(frame), out_dir / SUMMARY_FILE, docs)
    record = {"success": result.success, "rows": result.rows, "checks": [c.__dict__ for c in checks]}
    result.summary.write_text(json.dumps(record, indent=2, default=str))
    (out_dir / MARKDOWN_FILE).write_text(result.markdown())
    if not result.success:
        keys = sorted({f"validate.severity.{check.group}" for check in checks
                       if not check.success and check.severity == "fail"})
        raise ValidationFailed(f"{source or dataset}: {result.failures()}\n"
                               f"fix the data or the validate section of params.yaml (set {' and '.join(keys)} to "
                               f"warn to train anyway); details: {result.summary}", result)
    return result


def _check(name: str, group: str, severity: str, outcome) -> Check:
    details = outcome.result or {}
    observed = details.get("observed_value")
    if group == "class_share":  # "mostly" checks report the share of other rows; show the class's own share
        observed = f"{1 - details.get('unexpected_percent', 0) / 100:.1%}"
    elif group == "label_shift" and isinstance(observed, (int, float)):
        observed = f"KL {observed:.3f}"
    elif observed is None and details.get("unexpected_count"):
        observed = f"{details['unexpected_count']} bad rows"
    examples = sorted({str(value) for value in details.get("partial_unexpected_list") or []})[:5]
    error = (outcome.exception_info or {}).get("exception_message")
    if error:  # GX records a check that crashed as a failure; say why instead of showing nothing
        return Check(name, False, f"error: {error}", [], group, severity)
    if group in ("conflicts", "class_share"):  # a flag or other labels: nothing a reader can act on
        examples = []
    if group == "schema":
        observed = None
    return Check(name, bool(outcome.success), observed, examples, group, severity)


def _build_docs(context, docs_dir: Path) -> Path:
    shutil.rmtree(docs_dir, ignore_errors=True)  # the index lists only this run; stale pages would mislead
    context.add_data_docs_site(site_name="nichetune", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    context.build_data_docs(site_names=["nichetune"])
    return docs_dir / "index.html"


def run_stage(params: Params, paths: Paths) -> str:
    """The dvc.yaml stage: validate the assembled dataset; errors name the dataset's stored batches."""
    from tasks.batches import RAW_DIR

    return run(params.validate, paths.stage("ingest") / DATASET_FILE, paths.stage("validate"),
               str(RAW_DIR / params.ingest.dataset)).text()


def main() -> None:
    """`python -m tasks.validate`: the dvc.yaml stage."""
    from tasks.stage import stage_main

    stage_main("validate")


if __name__ == "__main__":
    main()
