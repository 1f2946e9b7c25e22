"""Prediction with a registered model: the MLflow pyfunc wrapper that `mlflow models serve` and
`mlflow.pyfunc.load_model` use, around the same classifier the evaluate stage uses (tasks.portfolio.load_classifier)."""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.pyfunc
import numpy as np
import pandas as pd

from tasks import cores
from tasks.encodings import repair_texts
from tasks.errors import DataError, NichetuneError
from tasks.progress import bar
# FORMULA_START and escape_formula are imported from here too
from tasks.spreadsheet import FORMULA_START, escape_formula, escape_frame, write_workbook  # noqa: F401

if TYPE_CHECKING:  # the served model imports this module: keep its imports to what prediction needs
    from tasks.config import IngestParams


def predict_frame(classifier, texts: list[str]) -> pd.DataFrame:
    """One row per text: the predicted label, its probability, and one `prob_<label>` column per class. A text
    that is empty or only whitespace gets none of them (empty cells): there is nothing to read, and a label the
    model would give it is the classes' prior, not an answer (ingest quarantines such rows for the same reason)."""
    readable = [i for i, text in enumerate(texts) if text.strip()]
    probs = np.asarray(classifier.predict_proba([texts[i] for i in readable])) if readable else None
    every = np.full((len(texts), len(classifier.labels)), np.nan, dtype=np.float32 if probs is None else probs.dtype)
    best, labels = np.full(len(texts), np.nan, dtype=every.dtype), np.full(len(texts), None, dtype=object)
    if probs is not None:
        every[readable], best[readable] = probs, probs.max(axis=1)
        labels[readable] = [classifier.labels[i] for i in probs.argmax(axis=1)]
    frame = pd.DataFrame(every, columns=[f"prob_{label}" for label in classifier.labels])
    frame.insert(0, "probability", best)
    frame.insert(0, "prediction", labels)
    return frame


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """Input: a dataframe with a `text` column. Output: what `predict_frame` returns."""

    def load_context(self, context) -> None:
        # Imported here: MLflow pickles this class, and the module-level state of tasks.model (the loaded
        # shared backbones, with their locks) must not travel with it.
        self.onnx_dir = context.artifacts.get("onnx_dir")  # register.runtime onnx: the exported graphs, no torch
        if self.onnx_dir:
            self.load_onnx(cores.share())
            return
        from tasks.portfolio import load_classifier

        self.classifier = load_classifier(context.artifacts["model_dir"])

    def load_onnx(self, threads: int) -> None:
        from tasks.onnx_runtime import load

        # the model it replaces is left to the garbage collector, its thread pool with it: a request being served
        # on another thread may still be reading it
        self.classifier = load(self.onnx_dir, threads=threads)
        self.threads, self.checked = threads, time.monotonic()

    def follow_cores(self) -> None:
        """An onnxruntime session keeps the thread count it was made with, so when this process's share of the
        cores changed (a training started or ended beside it, tasks.cores) the graphs are loaded again with the
        new share, as torch would take it; looked at once a second at most, between batches."""
        if not getattr(self, "onnx_dir", None) or time.monotonic() - self.checked < cores.REFRESH_S:
            return
        threads = cores.share()
        if threads != self.threads:
            self.load_onnx(threads)
        self.checked = time.monotonic()

    def __getstate__(self) -> dict:
        # MLflow may load and run the model on the input example before pickling it: the loaded classifier
        # (weights, locks) is rebuilt by load_context, never pickled.
        return {key: value for key, value in self.__dict__.items() if key != "classifier"}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        self.follow_cores()
        return predict_frame(self.classifier, model_input["text"].astype(str).tolist())


# ---------------------------------------------------------------- `nichetune predict FILE`

OUTPUT_SUFFIX = ".predictions.csv"  # default output, next to the input: <stem>.predictions.csv
DEFAULT_ALIAS = "champion"


class ModelNotFound(NichetuneError):
    """The registry has no model, version or alias by that name; the message lists what it has."""


@dataclass(frozen=True)
class PredictionFile:
    """What `predict_file` wrote: where, how many rows, and which registered model version made them."""

    output: Path
    rows: int
    model_uri: str
    version: str
    blank_lines: list = field(default_factory=list)  # lines whose text is empty: no prediction there


def model_uri(spec: str | None, default_name: str) -> str:
    """`models:/...` for NAME@ALIAS, NAME/VERSION, NAME (its champion) or a `models:/` URI; None: the champion
    of `default_name` (register.model_name)."""
    spec = (spec or default_name).strip()
    if spec.startswith("models:/"):
        return spec
    if "@" in spec or "/" in spec:
        return f"models:/{spec}"
    return f"models:/{spec}@{DEFAULT_ALIAS}"


def resolve_version(uri: str, tracking: str) -> tuple[str, str]:
    """The model name and the version number `uri` names; ModelNotFound says what the registry holds and
    what to do."""
    from mlflow.exceptions import MlflowException

    from tasks.tracking import registry_client, version_numbers

    reference = uri.removeprefix("models:/")
    name, alias, version = _split_reference(reference)
    client = registry_client(tracking)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise ModelNotFound(f"no registered model named {name!r} in {tracking} (registered: {known}); "
                            "train and register one with nichetune run, or pass --model NAME@ALIAS") from None
    if alias is not None:
        if alias not in model.aliases:
            raise ModelNotFound(f"no version of {name} has the alias {alias} (aliases: {_aliases(model)}); "
                                f"promote one with nichetune promote, or pass --model {name}/VERSION")
        return name, str(model.aliases[alias])
    try:
        return name, str(client.get_model_version(name, version).version)
    except MlflowException:
        found = version_numbers(client, name)
        raise ModelNotFound(f"{name} has no version {version!r} (versions: {', '.join(found) or 'none'}); "
                            f"pass one of them, or --model {name}@{DEFAULT_ALIAS}") from None


def _split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """NAME@ALIAS or NAME/VERSION into (name, alias, version); anything else is a one-line error."""
    name, at, alias = reference.partition("@")
    if at and name and alias:
        return name, alias, None
    name, slash, version = reference.partition("/")
    if slash and name and version.isdigit():
        return name, None, version
    raise ModelNotFound(f"--model {reference!r}: expected NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS")


def _aliases(model) -> str:
    return ", ".join(f"{a} -> version {v}" for a, v in sorted(model.aliases.items())) or "none"


def load_registered(uri: str, tracking: str):
    """The pyfunc model behind `uri` from the registry at `tracking`, and its version number (the version is
    resolved first and loaded by number, so an alias moved meanwhile cannot mix two versions up)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.tracking import first_line, tracking_store

    name, version = resolve_version(uri, tracking)
    try:
        with tracking_store(tracking):
            return mlflow.pyfunc.load_model(f"models:/{name}/{version}"), version
    except MlflowException as err:
        raise ModelNotFound(f"{uri} (version {version}) could not be loaded from {tracking}: {first_line(err)}") \
            from None


def download_registered(uri: str, tracking: str, dst: str | Path) -> tuple[str, str, str, Path]:
    """The registered version `uri` names, downloaded into `dst`: its name, version, run id and the saved model
    folder (what tasks.portfolio.load_classifier and tasks.export read)."""
    import mlflow

    from tasks.layout import MODEL_DIR
    from tasks.tracking import registry_client, tracking_store

    name, version = resolve_version(uri, tracking)
    run_id = registry_client(tracking).get_model_version(name, version).run_id
    with tracking_store(tracking):
        model = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst)))
    model_dir = model / "artifacts" / MODEL_DIR
    if not model_dir.is_dir():
        raise ModelNotFound(f"{name} version {version}: its logged model holds no {MODEL_DIR}/ folder (not a "
                            "nichetune model?); pass a version that nichetune registered")
    return name, version, run_id, model_dir


DECIMAL_POINT = r"[+-]?\d+\.\d+"  # a number written with a decimal point


@dataclass(frozen=True)
class Dialect:
    """How a prediction file is written: in its input's delimiter; in UTF-8 with a BOM when the input came from a
    program that needs one to read UTF-8 (Excel opens a BOM-less CSV in the Windows code page, so accents turn to
    "Ã©"): an input that had a BOM or was in another encoding (cp1252, UTF-16); and with a decimal comma where the
    input is semicolon-separated and writes no number with a decimal point: Excel writes `;` where the comma is the
    decimal separator, and there reads 0.93 as text, which no one can sort by."""

    delimiter: str = ","
    encoding: str = "utf-8"
    decimal: str = "."

    @classmethod
    def of(cls, source: Path, encoding: str, delimiter: str | None, cells: pd.DataFrame | None = None) -> Dialect:
        with open(source, "rb") as handle:
            bom = handle.read(3) == codecs.BOM_UTF8
        excel = bom or encoding.replace("_", "-").lower() not in ("utf-8", "utf8", "ascii", "parquet")
        decimal = "," if delimiter == ";" and not _writes_decimal_points(cells) else "."
        return cls(delimiter or ",", "utf-8-sig" if excel else "utf-8", decimal)


def _writes_decimal_points(cells: pd.DataFrame | None) -> bool:
    """Whether any cell is a number written with a decimal point (12.5, -0.3)."""
    if cells is None or cells.empty:
        return False
    values = pd.Series(cells.to_numpy().ravel()).dropna().astype(str).str.strip()
    return bool(values.str.fullmatch(DECIMAL_POINT).any())


def read_texts(source: Path, ingest: IngestParams) -> tuple[pd.DataFrame, Dialect]:
    """The file's rows as strings, with a text column named by `ingest.text_column` (missing text: ""), indexed by
    their line (or record) in the file, and the dialect to write its predictions in."""
    from tasks.readers import LINE, PROBLEM, RAW, read_table

    table = read_table(source, ingest.encoding, ingest.delimiter)
    frame = table.frame
    if ingest.text_column not in frame.columns:
        found = ", ".join(repr(c) for c in frame.columns if c not in (LINE, PROBLEM, RAW))
        raise DataError(f"{source}: no column {ingest.text_column!r} (ingest.text_column); columns found: {found}")
    broken = frame[frame[PROBLEM].notna()]
    if len(broken):
        first = broken.iloc[0]
        raise DataError(f"{source}: line {first[LINE]}: {first[PROBLEM]} ({len(broken)} such rows); fix them "
                        "(quote fields that hold the delimiter) and run predict again")
    frame = frame.set_index(LINE, drop=True).drop(columns=[PROBLEM, RAW])
    frame[ingest.text_column] = frame[ingest.text_column].fillna("")
    return frame, Dialect.of(source, table.encoding, table.delimiter, frame)


def default_output(source: Path, delimiter: str = ",") -> Path:
    """`<stem>.predictions.csv` next to the input (`.tsv` for a tab-separated input, `.xlsx` for a workbook)."""
    from tasks.readers import EXCEL_SUFFIXES

    if source.suffix.lower() in EXCEL_SUFFIXES:
        return source.with_name(source.stem + OUTPUT_SUFFIX.replace(".csv", ".xlsx"))
    suffix = OUTPUT_SUFFIX.replace(".csv", ".tsv") if delimiter == "\t" else OUTPUT_SUFFIX
    return source.with_name(source.stem + suffix)


PROGRESS_CHUNK = 512  # rows per call to the model: a bar step every second or so on 2 CPU cores


def predict_in_chunks(pyfunc, texts: list[str]) -> pd.DataFrame:
    """The model's predictions for `texts`, `PROGRESS_CHUNK` rows at a time so that a bar can show the ETA."""
    parts = []
    with cores.claim(), bar(len(texts), "predicting", "row") as progress:
        for start in range(0, len(texts), PROGRESS_CHUNK):
            chunk = texts[start : start + PROGRESS_CHUNK]
            parts.append(pyfunc.predict(pd.DataFrame({"text": chunk})))
            progress.update(len(chunk))
    if not parts:  # an empty file: the model still says which columns it returns
        return pyfunc.predict(pd.DataFrame({"text": texts}))
    return pd.concat(parts, ignore_index=True)


def predict_file(source: Path, ingest: IngestParams, model: str, tracking: str,
                 output: Path | None = None) -> PredictionFile:
    """Predict every row of `source` with the registered `model` (a `models:/` URI) and write a CSV: the
    input columns, `prediction`, `probability` and one `prob_<label>` per class, formulas escaped, in the input's
    delimiter and, for an input from Excel, its encoding's stand-in (Dialect). The model reads each text with
    mojibake repaired, as ingest stores them (ingest.repair_encoding)."""
    frame, dialect = read_texts(source, ingest)
    output = Path(output) if output is not None else default_output(source, dialect.delimiter)
    if output.resolve() == source.resolve():
        raise DataError(f"{output}: is the input file; pass another --output")
    with cores.claim():  # before loading: an ONNX model takes its share of the cores when it loads
        pyfunc, version = load_registered(model, tracking)
        texts = frame[ingest.text_column].astype(str)
        if ingest.repair_encoding:  # as ingest stored the texts the model learned from; the output keeps the file's
            texts, _ = repair_texts(texts)
        predictions = predict_in_chunks(pyfunc, texts.tolist())
    clash = [c for c in predictions.columns if c in frame.columns]
    if clash:
        raise DataError(f"{source}: column {clash[0]!r} would be overwritten by the predictions; rename it")
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".xlsx":
        cells = typed_cells(source, frame)
        write_workbook(pd.concat([cells.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1), output)
    else:
        result = pd.concat([frame.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)
        escape_frame(result).to_csv(output, index=False, sep=dialect.delimiter, encoding=dialect.encoding,
                                    decimal=dialect.decimal)
    blank = frame.index[predictions["prediction"].isna().to_numpy()].tolist()
    return PredictionFile(output, len(frame), model, version, blank)


def typed_cells(source: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The workbook's cells behind `frame` (its rows by their number in the sheet) as Excel holds them, so that
    numbers and dates stay numbers and dates in the predictions workbook; `frame` itself for any other input."""
    from tasks.readers import EXCEL_SUFFIXES, sheet_rows

    if source.suffix.lower() not in EXCEL_SUFFIXES:
        return frame
    (_, header), *rows = sheet_rows(source)
    width = len(frame.columns)
    if [("" if name is None else str(name)).strip() for name in header[:width]] != list(frame.columns):
        return frame  # a labeling tool's export, reshaped when it was read
    rows = dict(rows)
    return pd.DataFrame([(list(rows[line]) + [None] * width)[:width] for line in frame.index], columns=frame.columns,
                        dtype=object)
