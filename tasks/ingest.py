"""Ingest: a labeling-tool export becomes an immutable, DVC-versioned batch under data/raw/<dataset>/; rows that
cannot be used go to data/quarantine/<dataset>/ with their source line and the reason. Nothing is dropped:
rows read = rows accepted + rows quarantined. Unlabeled texts (the pool) take the same way into
data/unlabeled/<dataset>/ and data/unlabeled_quarantine/<dataset>/ (tasks.batches.UNLABELED), with only the text
kept. The pipeline's ingest stage then assembles every stored batch of both kinds. Duplicates are judged on the
text as the user gave it; only its PII-masked form and a hash are stored."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq

from tasks import consent, versioning
from tasks.batches import (LABELED, POOL_DIR, RAW_DIR, UNLABELED, Store, batch_files, batch_with_digest,
                           checked_dataset_name, content_digests, next_sequence, pending_events, post_event)
from tasks.config import IngestParams, Params, Paths
from tasks.encodings import repair_texts
from tasks.errors import DataError
from tasks.labeling_tools import tool_name
from tasks.layout import DATASET_FILE, POOL_FILE, VERSION_FILE
from tasks.pii import redact
from tasks.progress import bar, say
from tasks.readers import EXCEL_SUFFIXES, LINE, PROBLEM, RAW, big_file, read_table
from tasks.spreadsheet import escape_frame, unescape_formula

REASON = "_reason"
BROKEN_CHARACTER = "[\ud800-\udfff]"  # a lone UTF-16 surrogate: JSON can write one, UTF-8 cannot store it
SOURCE = "_source_file"
BATCH = "_batch"
SUGGESTED_ID = "nichetune_id"  # the column of a suggestion batch (tasks.suggest) that names its pool text
KEY = "_text_key"  # a hash of the text as the user gave it, before PII masking: duplicates are judged on it
REPAIRED_SHOWN = 5  # lines of repaired texts the report names
ALREADY_STORED = "already stored by an earlier batch"  # the same text (and label) as a stored row
POOL_COLUMNS = ("text", KEY, BATCH)  # the assembled pool (layout.POOL_FILE), which finetune reads


OUTSIDE_LABELS = "label outside the label set"
UNKNOWN_SHOWN = 10  # label values outside the label set listed by name in the report
LABEL_SHOWN = 40  # characters of each


@dataclass(frozen=True)
class BatchReport:
    """What one ingest did: counts that always add up (rows read = accepted + quarantined + seen before),
    reasons, PII found, and where the rows went."""

    source: str
    dataset: str
    rows_read: int
    accepted: int
    quarantined: int
    reasons: dict
    pii_redacted: dict
    encoding: str
    batch: str | None  # the stored batch file, relative to the project root
    quarantine: str | None  # the quarantine file, relative to the project root
    already_ingested_as: str | None  # the same rows seen before: only rows that pass now and did not then are new
    data_version: str | None  # the DVC hash of the batches' folder (data/raw/<dataset>) after this ingest
    seen_before: int = 0  # the same file again: rows stored or quarantined by the earlier ingest
    events: tuple[str, ...] = ()  # outbox files of stored batches whose event is still to be sent
    kind: str = LABELED.kind  # labeled rows, or unlabeled texts for the pool (which announce nothing)
    not_for_training: str | None = None  # the dataset's consent mark, as a line: stored, but never trained on
    repaired: tuple[int, ...] = ()  # the lines whose text was mojibake, repaired (ingest.repair_encoding)
    unknown_labels: tuple[str, ...] = ()  # each label value outside the label set, its rows and closest known label
    alike_labels: tuple[str, ...] = ()  # without a label set: label values written alike, stored as they are

    def text(self) -> str:
        """The lines `nichetune ingest` prints."""
        if self.already_ingested_as and not self.accepted:
            return f"{self.source}: already ingested as {self.already_ingested_as}; nothing added"
        before = (f" + {self.seen_before} as before (already ingested as {self.already_ingested_as})"
                  if self.already_ingested_as else "")
        lines = [f"{self.source}: {self.rows_read} rows read = {self.accepted} accepted + "
                 f"{self.quarantined} quarantined{before} (decoded as {self.encoding})"]
        lines += [f"  quarantined, {reason}: {count}" for reason, count in sorted(self.reasons.items())]
        if self.unknown_labels:
            more = f", and {len(self.unknown_labels) - UNKNOWN_SHOWN} more" if len(self.unknown_labels) > UNKNOWN_SHOWN \
                else ""
            lines.append(f"    {', '.join(self.unknown_labels[:UNKNOWN_SHOWN])}{more}: correct them in the export, or "
                         "add them to validate.labels in params.yaml and ingest the file again")
        if self.alike_labels:
            lines.append(f"  labels written alike, trained as different classes: {'; '.join(self.alike_labels)}; "
                         "list the labels in validate.labels to read each as one")
        if self.pii_redacted:
            lines.append(f"  PII redacted: {_counts(self.pii_redacted)}")
        if self.repaired:
            shown = ", ".join(map(str, self.repaired[:REPAIRED_SHOWN]))
            more = ", ..." if len(self.repaired) > REPAIRED_SHOWN else ""
            lines.append(f"  text repaired, decoded wrong by an earlier system (KÃ¶ln for Köln): {len(self.repaired)} "
                         f"(line{'s' if len(self.repaired) > 1 else ''} {shown}{more})")
        lines += [f"  stored: {self.batch}"] if self.batch else []
        lines += [f"  quarantine: {self.quarantine}"] if self.quarantine else []
        if self.data_version:
            folders = [Path(path).parent for path in (self.batch, self.quarantine) if path]
            records = " ".join(f"{folder}.dvc {folder.parent}/.gitignore" for folder in folders)
            what = f"dataset {self.dataset}" if self.kind == LABELED.kind else f"unlabeled pool of {self.dataset}"
            lines.append(f"  {what} is now DVC version {self.data_version} (commit its records: git add {records})")
        lines += [self.not_for_training] if self.not_for_training else []
        return "\n".join(lines)

    def payload(self) -> dict:
        """What the `nichetune.data.labeled` event says about this batch."""
        return {"dataset": self.dataset, "data_version": self.data_version, "batch": self.batch,
                "rows_read": self.rows_read, "accepted": self.accepted, "quarantined": self.quarantined}


@dataclass(frozen=True)
class IngestResult:
    """The pipeline's view: every stored batch of one dataset, assembled."""

    dataset: Path  # parquet: text, label, [timestamp], [id], metadata..., _batch
    version: dict  # with "unlabeled": the pool's data_version, batches and rows
    rows: int
    ingested: BatchReport | None = None  # what ingesting `ingest.path` did, when the run did it
    pool: Path | None = None  # parquet: POOL_COLUMNS, every stored unlabeled text (no rows when there is no pool)
    pool_rows: int = 0
    pool_version: str | None = None  # the DVC hash of data/unlabeled/<dataset>; None while it has no record


def standard_columns(cfg: IngestParams, store: Store = LABELED, present=None) -> dict[str, str]:
    """Pipeline column -> the export's column name, as params map them. Unlabeled texts need only the text; their
    timestamp, id and metadata columns are kept where the file (columns `present`) has them, so that a suggestion
    batch carries them to the labeling tool and its labeled export comes back as a labeled batch must be. A label
    column there is not stored."""
    names = {"text": cfg.text_column} if not store.labeled else {"text": cfg.text_column, "label": cfg.label_column}
    names.update({"timestamp": cfg.timestamp_column} if cfg.timestamp_column else {})
    names.update({"id": cfg.id_column} if cfg.id_column else {})
    names.update({column: column for column in cfg.metadata_columns})
    if not store.labeled:
        names = {name: column for name, column in names.items()
                 if name == "text" or (present is not None and column in present)}
    return names


def label_form(value: str) -> str:
    """A label as exports vary in writing it: case folded, spaces, hyphens and underscores alike."""
    return " ".join(re.sub(r"[_\-]+", " ", value.casefold()).split())


def label_forms(labels: list[str]) -> dict[str, str]:
    """Known label by label_form; a form two known labels share is nobody's, so such a value stays outside."""
    forms: dict[str, list[str]] = {}
    for label in labels:
        forms.setdefault(label_form(label), []).append(label)
    return {form: known[0] for form, known in forms.items() if len(known) == 1}


def unknown_labels(frame: pd.DataFrame, reasons: pd.Series, labels: list[str]) -> tuple[str, ...]:
    """A line per label value outside the label set: how many rows, and the known label it resembles most."""
    import difflib

    outside = frame.loc[reasons.index[reasons == OUTSIDE_LABELS], "label"].value_counts()
    forms = label_forms(labels)
    lines = []
    for value, count in outside.items():
        close = difflib.get_close_matches(label_form(value), list(forms), n=1, cutoff=0.6)
        hint = f"; closest known: {forms[close[0]]}" if close else ""
        value = redact(value)[0]  # a column of texts named as the labels by mistake: shown, so masked
        shown = value if len(value) <= LABEL_SHOWN else value[:LABEL_SHOWN - 1] + "…"
        lines.append(f"{shown!r} ({count} row{'s' if count > 1 else ''}{hint})")
    return tuple(lines)


def alike_labels(values: pd.Series) -> tuple[str, ...]:
    """Label values that differ only as exports vary in writing a label ("Billing", "billing "), with their rows:
    with no label set, ingest stores each as it is, and training would learn them as different classes."""
    groups: dict[str, list[str]] = {}
    for value, count in values.value_counts().items():
        groups.setdefault(label_form(value), []).append(f"{value!r} ({count} row{'s' * (count > 1)})")
    return tuple(" and ".join(group) for group in groups.values() if len(group) > 1)


def row_reasons(frame: pd.DataFrame, cfg: IngestParams, labels: list[str], stored: pd.DataFrame,
                store: Store = LABELED) -> pd.Series:
    """Why each row cannot be used (None: accept). The first failing check names the reason. A pool text needs no
    timestamp (prepare has flagged one that is there but cannot be read)."""
    reason = pd.Series(frame[PROBLEM].to_numpy(), index=frame.index, dtype=object)

    def flag(mask: pd.Series, why: str) -> None:
        reason[mask & reason.isna()] = why

    flag(frame["text"].isna() | (frame["text"] == ""), "empty text")
    if "label" in frame:
        flag(frame["label"].isna() | (frame["label"] == ""), "missing label")
    for column in ("text", "label") if "label" in frame else ("text",):
        values = frame[column].fillna("")
        flag(values.str.contains("\x00", regex=False), f"NUL bytes in the {column}: part of the row is UTF-16 or "
             "binary; export it again as UTF-8")
        flag(values.str.contains(BROKEN_CHARACTER), f"a broken character in the {column} (half of an emoji or "
             "another UTF-16 pair); fix the text where it was written")
    if "timestamp" in frame and store.labeled:
        flag(frame["timestamp"].isna(), "missing or unparseable timestamp")
    if labels and "label" in frame:
        flag(~frame["label"].isin(labels), OUTSIDE_LABELS)
    flag(frame["text"].str.len() > cfg.max_text_chars, f"text over {cfg.max_text_chars:,} characters")
    candidates = frame[reason.isna()]
    label = candidates["label"] if "label" in candidates else ""  # unlabeled texts: every repeat is a duplicate
    seen = pd.concat([stored[["key", "label"]], pd.DataFrame({"key": candidates[KEY], "label": label})])
    first_label = seen.groupby("key")["label"].transform("first").iloc[len(stored):]
    repeated = seen["key"].duplicated(keep="first").iloc[len(stored):].to_numpy()
    first_label.index = candidates.index
    same = (first_label == label).to_numpy()
    # a labeling tool's export holds every row labeled so far: the rows an earlier batch stored are no problem
    before = candidates[KEY].isin(set(stored["key"])).to_numpy()
    reason[candidates.index[repeated & same & before]] = ALREADY_STORED
    reason[candidates.index[repeated & same & ~before]] = "exact duplicate"
    reason[candidates.index[repeated & ~same]] = "same text already labeled differently"
    return reason


def prepare(table_frame: pd.DataFrame, cfg: IngestParams, labels: list[str], path: Path,
            store: Store = LABELED) -> tuple[pd.DataFrame, Counter, tuple[int, ...]]:
    """Map columns, clean values, canonicalise label case, repair mojibake, key each text and redact PII; keeps
    every input row. Returns the rows, the PII found and the lines of the texts repaired. Masking is the slow
    part: a big file shows a bar over the values masked."""
    names = standard_columns(cfg, store, table_frame.columns)
    missing = [column for column in dict.fromkeys(names.values()) if column not in table_frame.columns]
    if missing:
        found = [c for c in table_frame.columns if not c.startswith("_")]
        raise DataError(f"{path}: column(s) {', '.join(map(repr, missing))} not found; the file has "
                        f"{', '.join(map(repr, found))}; set ingest.*_column in params.yaml")
    frame = pd.DataFrame({name: table_frame[column] for name, column in names.items()})
    repaired = pd.Index([])
    if cfg.repair_encoding:  # before the key: the same text repaired upstream later is the same text
        frame["text"], repaired = repair_texts(frame["text"])
    frame = frame.apply(lambda column: column.str.strip() if column.dtype == object else column)
    if labels:  # "Billing", "billing " and "Account access" are the labels billing and account_access
        forms = label_forms(labels)
        frame["label"] = frame["label"].map(lambda v: forms.get(label_form(v), v) if isinstance(v, str) else v)
    if "timestamp" in frame:
        frame["timestamp"] = parse_timestamps(frame["timestamp"], cfg.date_order,
                                              f"{path}: column {names['timestamp']!r}")
    frame[KEY] = text_hash(frame["text"].fillna(""))  # before masking: two emails make two texts
    pii: Counter = Counter()
    if cfg.redact_pii:
        columns = redacted_columns(cfg, store, table_frame.columns)
        with bar(len(frame) * len(columns), "masking PII", "value", shown=big_file(path)) as progress:
            for column in columns:
                frame[column], found = _redact_column(frame[column], identifier=column == "id", progress=progress)
                pii += found
    frame[LINE] = table_frame[LINE].to_numpy()
    frame[PROBLEM] = table_frame[PROBLEM].to_numpy()
    if "timestamp" in frame and not store.labeled:  # a pool text may have no time, but not one that cannot be read
        raw = table_frame[names["timestamp"]]
        garbled = frame["timestamp"].isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        frame.loc[garbled & frame[PROBLEM].isna(), PROBLEM] = "unparseable timestamp"
    return frame, pii, tuple(int(line) for line in table_frame.loc[repaired, LINE])


def redacted_columns(cfg: IngestParams, store: Store = LABELED, present=None) -> list[str]:
    """The pipeline columns PII is masked in: the text, the id and every metadata column that is kept."""
    kept = standard_columns(cfg, store, present)
    return [column for column in ["text", "id", *cfg.metadata_columns] if column in kept]


# a time of day without a date (12:30, 9:05:00 PM, an Excel time cell): no point in time to order rows by
TIME_ONLY = r"\s*\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([AaPp]\.?[Mm]\.?)?\s*"
# a date of numbers that starts with its day or its month, as spreadsheets write them: 07/09/2026, 7.9.26, 07-09-2026
NUMERIC_DATE = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{2}|\d{4})(?!\d)")


def parse_timestamps(values: pd.Series, date_order: str = "auto", where: str = "") -> pd.Series:
    """UTC timestamps; ISO 8601 fast, anything else through the slower mixed parser; failures become NaT.
    Numeric dates are read in `date_order` (ingest.date_order); one the order makes impossible (a month of 13)
    fails, where the mixed parser would silently swap its day and month."""
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    retry = parsed.isna() & values.notna() & (values != "")
    if not retry.any():
        return parsed
    parts = values[retry].astype(str).str.extract(NUMERIC_DATE).dropna().astype(int)
    dayfirst = reads_day_first(parts, date_order, values, where)
    parsed[retry] = pd.to_datetime(values[retry], errors="coerce", utc=True, format="mixed", dayfirst=dayfirst)
    parsed[retry & values.astype(str).str.fullmatch(TIME_ONLY)] = pd.NaT  # the mixed parser would add today's date
    day = parts[0] if dayfirst else parts[1]
    parsed[day.index[parsed[day.index].dt.day.to_numpy() != day.to_numpy()]] = pd.NaT
    return parsed


def reads_day_first(parts: pd.DataFrame, date_order: str, values: pd.Series, where: str) -> bool:
    """Whether numeric dates (their first two numbers in `parts`) start with the day. With date_order auto, a
    first number from 13 to 31 says day first and a second one month first; a file that says both, or neither
    while its dates differ by the order (07/09), stops with a DataError naming an example: read in the wrong
    order, every such date would be stored months off and move rows between the holdout and the training rows."""
    if date_order != "auto":
        return date_order == "day_first"
    first, second = parts[0], parts[1]
    # a number over 31 is no day either way: such a date says nothing about the order (and will not parse)
    days_first = parts.index[first.between(13, 31) & (second <= 12)]
    months_first = parts.index[second.between(13, 31) & (first <= 12)]
    if len(days_first) and len(months_first):
        raise DataError(f"{where}: dates in both orders, {values[days_first[0]]!r} (day first) and "
                        f"{values[months_first[0]]!r} (month first); correct the file, or set ingest.date_order "
                        f"to the right one to quarantine the others")
    if len(days_first) or len(months_first):
        return bool(len(days_first))
    either = parts.index[(first != second) & (first <= 12) & (second <= 12)]
    if len(either):
        raise DataError(f"{where}: dates such as {values[either[0]]!r} ({len(either)} in the file) read as day/month "
                        f"or month/day alike, and none tells which; set ingest.date_order: day_first or month_first")
    return False


def ingest_batch(cfg: IngestParams, labels: list[str], root: Path, source: Path,
                 dataset: str | None = None, announce: bool = True, store: Store = LABELED) -> BatchReport:
    """Read one export, store its usable rows as a new batch and the rest in quarantine, and version both.
    The same rows again (in any line endings) store only rows that pass now and did not then. With `announce`,
    a labeled batch's event waits in the outbox until `flows.events.emit_labeled` sends it; unlabeled texts
    (store=UNLABELED) and a dataset marked not for training announce nothing, so no training starts."""
    from filelock import FileLock

    dataset = checked_dataset(cfg, dataset)
    root = Path(root)
    if not source.is_file():
        raise DataError(f"{source}: file not found")
    if not (root / ".dvc").is_dir():
        raise DataError(f"{root}: not a DVC project; run `git init && dvc init` there first")
    digests = content_digests(source)
    marked = consent.mark_of(root, dataset)
    announce = announce and store.labeled and not marked
    lock = root / ".dvc" / "tmp" / f"nichetune-ingest-{dataset}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):  # two ingests of one dataset take turns; both land
        for folder in store.folders:  # in a fresh clone: a new record must keep the earlier batches
            versioning.pull_if_missing(root, str(folder / dataset))
        keep_pool_folder(root, dataset)
        earlier = batch_with_digest(root, dataset, digests, store)
        report = _store(cfg, labels if store.labeled else [], root, source, dataset, digests[0], earlier, store)
        if report.batch and announce:  # before versioning: a batch stored is announced even if this run dies
            post_event(root, dataset, Path(report.batch).stem, report.payload())
        folders = [str(folder / dataset) for folder in store.folders if (root / folder / dataset).is_dir()]
        version = versioning.track_folders(root, folders, cfg.dvc_lock_wait).get(str(store.batches / dataset))
        events = pending_events(root, dataset, version) if announce else ()  # with any stored but not sent
    report = dataclasses.replace(report, data_version=version, events=events,
                                 not_for_training=marked.notice() if marked else None)
    if report.accepted == 0 and not earlier:
        shown = report.unknown_labels[:UNKNOWN_SHOWN]
        # a value cut short is a sentence, not a label: most likely the column is the wrong one
        fix = (f"is ingest.label_column {cfg.label_column!r} the column of labels?" if any("…' (" in v for v in shown)
               else "correct them in the export, or add them to validate.labels")
        labels_seen = f"; labels outside validate.labels: {', '.join(shown)} ({fix})" if shown else ""
        raise DataError(f"{source}: every one of {report.rows_read} rows was rejected (see {report.quarantine}); "
                        f"reasons: {_reason_list(report.reasons)}{labels_seen}")
    return report


def checked_dataset(cfg: IngestParams, dataset: str | None) -> str:
    """The dataset name to ingest into, held to the rule of `ingest.dataset` (it names folders)."""
    if dataset is None or dataset == cfg.dataset:
        return cfg.dataset
    return checked_dataset_name(dataset)


def keep_pool_folder(root: Path, dataset: str) -> None:
    """dvc.yaml's ingest stage depends on data/unlabeled/<dataset>, and DVC refuses a missing dependency: a
    dataset without unlabeled texts gets an empty folder, which needs no record (git keeps no empty folder, so
    a fresh clone gets it from its first `nichetune ingest`). A folder DVC tracks is never replaced by it."""
    folder = Path(root) / POOL_DIR / dataset
    if not folder.exists() and not folder.with_name(f"{dataset}.dvc").exists():
        folder.mkdir(parents=True)


def _store(cfg: IngestParams, labels: list[str], root: Path, source: Path, dataset: str, digest: str,
           earlier: str | None, store: Store = LABELED) -> BatchReport:
    done = _stage_lines(source)
    # a labeling tool's export: only the label column's answers must be one label (a comment may differ)
    table = read_table(source, cfg.encoding, cfg.delimiter, cfg.label_column, cfg.text_column)
    table = dataclasses.replace(table, frame=dataset_names(table.frame, cfg))
    # a suggestion batch's CSV filled in, or a quarantine file fixed, or either saved as a workbook by the
    # spreadsheet it was edited in: the formula escape nichetune wrote it with comes off (a JSON export of the
    # labeling tools' tasks was never escaped)
    spreadsheet = table.delimiter is not None or source.suffix.lower() in EXCEL_SUFFIXES
    written_here = SUGGESTED_ID in table.frame or {REASON, SOURCE} <= set(table.frame.columns)
    if spreadsheet and written_here:
        table = dataclasses.replace(table, frame=_unescaped(table.frame))
    if table.frame.empty:
        raise DataError(f"{source}: the file has a header but no rows; export the {store.kind} rows too")
    done(f"read {len(table.frame)} rows ({table.encoding})")
    frame, pii, repaired = prepare(table.frame, cfg, labels, source, store)
    done(f"prepared: PII masked ({_counts(pii) or 'none found'})" if cfg.redact_pii else "prepared (PII kept)")
    if store.labeled and SUGGESTED_ID in table.frame:
        frame, restored = as_pooled(frame, table.frame[SUGGESTED_ID], root, dataset)
        done(f"{restored} suggested texts keep the timestamp and id the pool stored with them")
    stored = stored_keys(root, dataset, store)
    reasons = row_reasons(frame, cfg, labels, stored, store)
    done(f"checked: {reasons.isna().sum()} rows pass, {reasons.notna().sum()} do not")
    batch_id = f"{next_sequence(root, dataset, store):06d}-{digest}"  # the same rows in the same order: same name
    accepted = frame[reasons.isna()].drop(columns=[PROBLEM]).assign(**{SOURCE: source.name, BATCH: batch_id})
    if earlier:  # rows quarantined then that pass now (a wider label set) are new; the rest stay where they are
        rejected, seen = frame.iloc[:0], len(frame) - len(accepted)
        reasons = reasons.iloc[:0]
    else:
        rejected, more_pii = _quarantine_rows(table.frame, frame, reasons, source, cfg, store)
        seen, pii = 0, pii + more_pii
    batch_path = _write_once(root / store.batches / dataset / f"{batch_id}.parquet", accepted, "parquet")
    quarantine_path = _write_once(root / store.quarantine / dataset / f"{batch_id}.csv", rejected, "csv")
    done(f"stored {len(accepted)} rows, quarantined {len(rejected)}; DVC versions them next")
    relative = lambda path: str(path.relative_to(root)) if path else None  # noqa: E731
    return BatchReport(str(source), dataset, len(frame), len(accepted), len(rejected),
                       dict(Counter(reasons.dropna())), dict(pii), table.encoding,
                       relative(batch_path), relative(quarantine_path), earlier, None, seen, kind=store.kind,
                       repaired=repaired,
                       unknown_labels=unknown_labels(frame, reasons, labels) if labels and "label" in frame else (),
                       alike_labels=() if labels or "label" not in frame else alike_labels(
                           pd.concat([stored["label"], accepted["label"]])))


def dataset_names(frame: pd.DataFrame, cfg: IngestParams) -> pd.DataFrame:
    """A file with the dataset's columns back under their names where it has them only as the labeling tools name
    columns (`ticket_body` for `Ticket Body`: a suggestion batch's Label Studio and Argilla files use those)."""
    wanted = [column for column in dict.fromkeys([cfg.text_column, cfg.label_column, cfg.timestamp_column,
                                                  cfg.id_column, *cfg.metadata_columns]) if column]
    renamed = {tool_name(column): column for column in wanted
               if column not in frame and tool_name(column) in frame and tool_name(column) not in wanted}
    return frame.rename(columns=renamed)


def as_pooled(frame: pd.DataFrame, suggested: pd.Series, root: Path, dataset: str) -> tuple[pd.DataFrame, int]:
    """Rows of a suggestion batch labeled and exported (`suggested`: their nichetune_id) with the timestamp and id
    the pool stored with each text, missing where it stored none, whatever the file says: Label Studio's CSV and
    JSON-MIN exports write the annotation's time into `created_at` and its task id into `id`, and a labeled text
    stamped with the time it was labeled would land in the holdout, which takes the newest rows. The count of rows
    matched."""
    pool, _ = assemble_pool(root, dataset, every_column=True)
    pool = pool.assign(**{SUGGESTED_ID: pool[KEY].str[:16]}).drop_duplicates(SUGGESTED_ID).set_index(SUGGESTED_ID)
    ids = pd.Series(suggested.to_numpy(), index=frame.index).astype(str).str.strip()
    matched = ids.isin(pool.index)
    frame = frame.copy()
    for column in ("timestamp", "id"):
        if column in frame:
            stored = pool[column] if column in pool else pd.Series(None, index=pool.index, dtype=object)
            if column == "timestamp":
                stored = pd.to_datetime(stored, utc=True)
            frame.loc[matched, column] = ids[matched].map(stored)
    return frame, int(matched.sum())


def _unescaped(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells of the file's own columns with the formula escape nichetune wrote them with taken off: the texts
    as the pool stored them."""
    own = [column for column in frame.columns if not str(column).startswith("_")]
    return frame.assign(**{column: frame[column].map(unescape_formula) for column in own})


def _quarantine_rows(original: pd.DataFrame, prepared: pd.DataFrame, reasons: pd.Series, source: Path,
                     cfg: IngestParams, store: Store = LABELED) -> tuple[pd.DataFrame, Counter]:
    """The rejected rows with every column they came with, their line and reason; PII is masked in all
    columns (the text and metadata exactly as in stored rows)."""
    rows = original[reasons.notna()].drop(columns=[PROBLEM, LINE])
    if rows[RAW].isna().all():
        rows = rows.drop(columns=[RAW])
    pii: Counter = Counter()
    if cfg.redact_pii:
        names = standard_columns(cfg, store, original.columns)
        masked = {column: name for name, column in names.items()
                  if name in redacted_columns(cfg, store, original.columns)}
        for column in rows.columns:
            if column in masked:  # exactly as in stored rows, counted there
                rows[column] = prepared.loc[rows.index, masked[column]].astype(object)
            else:
                rows[column], found = _redact_column(rows[column])
                pii += found
    rows = rows.assign(**{SOURCE: source.name, LINE: original.loc[rows.index, LINE],
                          REASON: reasons[reasons.notna()]})
    return rows.map(_writable), pii


def _writable(value):
    """A broken character (a lone surrogate) as its escape, \\ud83d: UTF-8 cannot hold it, and the row must
    be kept to be fixed."""
    if isinstance(value, str) and re.search(BROKEN_CHARACTER, value):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _stage_lines(source: Path) -> Callable[[str], None]:
    """For a big file, a function that prints `<file>: <what>, <seconds since the last line> s` as each stage of
    its ingest ends; for a smaller one, a function that prints nothing (its report follows at once)."""
    if not big_file(source):
        return lambda what: None
    last = time.perf_counter()

    def done(what: str) -> None:
        nonlocal last
        now = time.perf_counter()
        say(f"{source.name}: {what}, {now - last:.1f} s")
        last = now

    return done


def stored_keys(root: Path, dataset: str, store: Store = LABELED) -> pd.DataFrame:
    """The text key and label ("" for unlabeled texts) of every row already stored for the dataset, oldest
    first."""
    keys = []
    for path in batch_files(root, dataset, store):
        has_key = KEY in pq.read_schema(path).names  # batches stored before keys: their masked text
        label = ["label"] if store.labeled else []
        frame = pd.read_parquet(path, columns=label + [KEY if has_key else "text"])
        keys.append(pd.DataFrame({"key": frame[KEY] if has_key else text_hash(frame["text"]),
                                  "label": frame["label"] if store.labeled else ""}))
    if not keys:
        return pd.DataFrame({"key": pd.Series(dtype=object), "label": pd.Series(dtype=object)})
    return pd.concat(keys, ignore_index=True)


def assemble(cfg: IngestParams, root: Path, out_dir: Path) -> IngestResult:
    """The pipeline's ingest stage: every stored batch of the dataset as one table, in order of arrival, with
    each text's key (validation judges duplicates on it) and the DVC version; the same for the unlabeled pool.
    A dataset marked not for training is refused before anything is written."""
    consent.refuse_if_marked(root, cfg.dataset)
    frame, version = _labeled(cfg, root)
    pool, pool_version = assemble_pool(root, cfg.dataset)
    version["unlabeled"] = pool_version
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_dir / DATASET_FILE, index=False)
    pool.to_parquet(out_dir / POOL_FILE, index=False)
    (out_dir / VERSION_FILE).write_text(json.dumps(version, indent=2))
    return IngestResult(out_dir / DATASET_FILE, version, len(frame), pool=out_dir / POOL_FILE, pool_rows=len(pool),
                        pool_version=pool_version["data_version"])


def _labeled(cfg: IngestParams, root: Path) -> tuple[pd.DataFrame, dict]:
    files = batch_files(root, cfg.dataset)
    if not files:
        raise DataError(f"{RAW_DIR / cfg.dataset}: no stored batches; run `nichetune ingest FILE "
                        f"--dataset {cfg.dataset}` or set ingest.path")
    frame = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
    known = frame[KEY] if KEY in frame else pd.Series(None, index=frame.index, dtype=object)
    frame[KEY] = known.fillna(text_hash(frame["text"]))  # batches stored before keys: their masked text
    keep = [c for c in [*standard_columns(cfg), KEY, BATCH] if c in frame.columns]
    frame = frame[keep]
    version = {**versioning.folder_version(root, str(RAW_DIR / cfg.dataset)),
               "dataset": cfg.dataset, "batches": [path.stem for path in files], "rows": len(frame)}
    return frame, version


def assemble_pool(root: Path, dataset: str, every_column: bool = False) -> tuple[pd.DataFrame, dict]:
    """Every stored unlabeled text of the dataset (POOL_COLUMNS, or with `every_column` also the timestamps, ids
    and metadata batches kept; in order of arrival; no rows without a pool), and its version: DVC hash, batches,
    rows."""
    files = batch_files(root, dataset, UNLABELED)
    empty = pd.DataFrame({column: pd.Series(dtype=object) for column in POOL_COLUMNS})
    columns = None if every_column else list(POOL_COLUMNS)
    pool = pd.concat([empty, *(pd.read_parquet(path, columns=columns) for path in files)], ignore_index=True)
    version = {"data_version": versioning.folder_version(root, str(POOL_DIR / dataset))["md5"],
               "batches": [path.stem for path in files], "rows": len(pool)}
    return pool, version


def run(cfg: IngestParams, labels: list[str], root: Path, out_dir: Path) -> IngestResult:
    """Ingest `ingest.path` when it is new (the same bytes are recognised), then assemble the dataset."""
    report = None
    if cfg.path:
        versioning.pull_if_missing(root, cfg.path)
        report = ingest_batch(cfg, labels, root, Path(root) / cfg.path, announce=False)  # this run trains on it
    return dataclasses.replace(assemble(cfg, root, out_dir), ingested=report)


def same_text(rows: pd.DataFrame, known: pd.DataFrame) -> pd.Series:
    """Which `rows` (columns text and KEY) hold a text of `known`: the same original, or the same text as stored.
    A labeling tool sends back the stored text, PII masked, so its key is the masked text's."""
    keys = set(known[KEY].dropna()) if KEY in known else set()
    keys |= set(text_hash(known["text"]).dropna())
    return rows[KEY].isin(keys) | text_hash(rows["text"]).isin(keys)


def text_key(text: pd.Series) -> pd.Series:
    """Texts compare equal when they differ only in surrounding or repeated whitespace."""
    return text.str.split().str.join(" ")


def text_hash(text: pd.Series) -> pd.Series:
    """`text_key` as a hash: stored beside masked text, it keeps the original's identity, not its words."""
    digest = lambda key: hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]  # noqa: E731
    return text_key(text.astype(object)).map(digest, na_action="ignore")


def _redact_column(values: pd.Series, identifier: bool = False, progress=None) -> tuple[pd.Series, Counter]:
    total: Counter = Counter()

    def one(value):
        if progress is not None:
            progress.update()
        if not isinstance(value, str):
            return value
        clean, found = redact(value, identifier)
        total.update(found)
        return clean

    return values.map(one), total


def _write_once(path: Path, frame: pd.DataFrame, kind: str) -> Path | None:
    """Write a new file that is never rewritten: a temporary name first, then a rename, then read-only."""
    if frame.empty:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise DataError(f"{path}: already exists and batches are never rewritten; ingest again in a second")
    temporary = path.with_name(f".{path.name}.tmp")
    if kind == "parquet":
        frame.to_parquet(temporary, index=False)
    else:
        escape_frame(frame).to_csv(temporary, index=False, quoting=csv.QUOTE_ALL)  # a lone \r stays inside
    os.chmod(temporary, 0o444)
    os.replace(temporary, path)
    return path


def _counts(found: dict) -> str:
    """`email 2, phone 1`: PII found, by kind."""
    return ", ".join(f"{kind} {count}" for kind, count in sorted(found.items()))


def _reason_list(reasons: dict) -> str:
    return "; ".join(f"{reason} ({count})" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]))


def run_stage(params: Params, paths: Paths) -> IngestResult:
    """The dvc.yaml stage: assemble the stored batches of `ingest.dataset` (`nichetune ingest` adds batches)."""
    return assemble(params.ingest, paths.root, paths.stage("ingest"))


def main() -> None:
    """`python -m tasks.ingest`: the dvc.yaml stage."""
    from tasks.stage import stage_main

    stage_main("ingest")


if __name__ == "__main__":
    main()
