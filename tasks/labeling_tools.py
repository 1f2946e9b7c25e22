"""Labeling-tool exports as rows of columns: Label Studio's JSON export (tasks with annotations) and Argilla 2.x
records, nested (`dataset.records.to_json`, the records.json of `Dataset.to_disk`) or flat
(`records.to_list(flatten=True)`, `records.to_datasets()`, saved as JSON, JSON Lines, Parquet or CSV).

Pure functions of parsed JSON or of a frame; tasks.readers reads the files and picks the one that applies. A label is
what a person answered: Label Studio's predictions and Argilla's suggestions are a model's guesses and never become
labels. An answer that is not one label (several choices, annotators who disagree) is kept as a reason per label
column, so that the caller can quarantine the row saying what to fix."""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from tasks.errors import DataError

LS_TASK_ID = "ls_task_id"  # Label Studio's task id as a column (a key of that name in the task's data wins)
SUBMITTED = "submitted"  # Argilla's response statuses are draft, submitted and discarded: only submitted ones count
COMPLETED = "completed"  # an Argilla record with enough submitted responses (the other status is pending)
RESPONSES, SUGGESTION = ".responses", ".suggestion"  # Argilla's flat columns are named <question><suffix>
FLAT_SUFFIXES = (RESPONSES, f"{RESPONSES}.users", f"{RESPONSES}.status", SUGGESTION, f"{SUGGESTION}.score",
                 f"{SUGGESTION}.agent")


def tool_name(column: str) -> str:
    """A dataset's column as the labeling tools name it: Argilla takes field, question and metadata names of
    lowercase letters, digits, `_` and `-` (its SDK lowercases some names itself), and a Label Studio `$variable`
    only word characters. `Ticket Body` is `ticket_body`."""
    return re.sub(r"[^a-z0-9_]+", "_", column.casefold()).strip("_") or "text"


def tool_names(names: dict[str, str]) -> dict[str, str]:
    """`names` (pipeline column -> the dataset's column) with each column as the tools name it; two columns that
    the tools would name alike are an error, since their answers could not be told apart."""
    named: dict[str, str] = {}
    for column in dict.fromkeys(names.values()):
        other = named.setdefault(tool_name(column), column)
        if other != column:
            raise DataError(f"columns {other!r} and {column!r} are both {tool_name(column)!r} in a labeling tool; "
                             "rename one in the data (or in ingest.*_column) and ingest it again")
    return {pipeline: tool_name(column) for pipeline, column in names.items()}


@dataclass(frozen=True)
class Row:
    """One record as columns (values as the tool wrote them), why it cannot be read at all, and per label column
    why its answer is not one label."""

    values: dict
    problem: str | None = None
    answers: dict[str, str] = field(default_factory=dict)


def export_kind(records: list[dict]) -> str:
    """Which tool wrote `records`, told by the keys of the first: label_studio, argilla, or flat (anything else)."""
    first = records[0] if records else {}
    if "data" in first and ("annotations" in first or "predictions" in first):
        return "label_studio"
    if "fields" in first and ("responses" in first or "suggestions" in first):
        return "argilla"
    return "flat"


def rows(records: list[dict]) -> list[Row]:
    """One row per record, read the way the tool that wrote them meant."""
    return CONVERTERS[export_kind(records)](records)


# --- Label Studio -----------------------------------------------------------------------------------------------

def label_studio_rows(tasks: list[dict]) -> list[Row]:
    """Label Studio's JSON export: per task its data keys, `ls_task_id`, and per Choices control (its `from_name`)
    the choice its annotators agree on, each annotator's latest annotation that was not cancelled counting (only
    those marked ground truth, where one is); empty where there is none. A control that only a prediction answers
    still gets its column, empty."""
    controls = list(dict.fromkeys(name for task in tasks for name in _choice_controls(task)))
    return [_task_row(task, controls) for task in tasks]


def _task_row(task: dict, controls: list[str]) -> Row:
    data = task.get("data")
    if not isinstance(data, dict):
        return Row({}, "a Label Studio task without a data object; export the project again as JSON")
    values = {LS_TASK_ID: task.get("id"), **data}
    given = [_choices(note) for note in _counted(_listed_or_empty(task.get("annotations")))]
    answers = {}
    for name in controls:  # a data key of the same name gives way to the annotation
        picks = [choices[name] for choices in given if choices.get(name)]
        several = next((picked for picked in picks if len(picked) > 1), None)
        distinct = list(dict.fromkeys(picked[0] for picked in picks))
        values[name] = distinct[0] if len(distinct) == 1 and several is None else None
        if several is not None:
            answers[name] = several_choices(name, several, "Label Studio")
        elif len(distinct) > 1:
            answers[name] = (f"annotators disagree on {name!r}: {', '.join(map(str, distinct))}; mark one annotation "
                             "as ground truth in Label Studio (or keep one) and export again")
    return Row(values, None, answers)


def _counted(annotations: list) -> list[dict]:
    """The annotations that give the task's label: those marked ground truth if any is, else every annotator's
    latest (by updated_at, else created_at, else position) that was not cancelled (skipped). Label Studio writes
    both times as UTC ISO 8601, which sort as text."""
    kept = [note for note in annotations if isinstance(note, dict) and not note.get("was_cancelled")]
    kept = [note for note in kept if note.get("ground_truth")] or kept
    latest: dict[str, tuple[str, int]] = {}
    for position, note in enumerate(kept):
        who = json.dumps(note.get("completed_by", f"annotation {position}"), sort_keys=True, default=str)
        when = (str(note.get("updated_at") or note.get("created_at") or ""), position)
        latest[who] = max(latest.get(who, when), when)
    return [kept[position] for _, position in sorted(latest.values(), key=lambda when: when[1])]


def _choices(annotation: dict | None) -> dict[str, list]:
    """Control name -> the choices an annotation's Choices results hold."""
    chosen: dict[str, list] = {}
    for result in _listed_or_empty(annotation.get("result")) if annotation else []:
        if _is_choice(result):
            chosen.setdefault(result["from_name"], []).extend(_listed_or_empty(result["value"].get("choices")))
    return chosen


def _choice_controls(task: dict) -> list[str]:
    """The Choices controls that the task's annotations or predictions answer: they name the label columns."""
    notes = [*_listed_or_empty(task.get("annotations")), *_listed_or_empty(task.get("predictions"))]
    results = [result for note in notes if isinstance(note, dict) for result in _listed_or_empty(note.get("result"))]
    return [result["from_name"] for result in results if _is_choice(result)]


def _is_choice(result: Any) -> bool:
    return (isinstance(result, dict) and result.get("type") == "choices" and isinstance(result.get("from_name"), str)
            and isinstance(result.get("value"), dict))


# --- Argilla ----------------------------------------------------------------------------------------------------

def argilla_rows(records: list[dict]) -> list[Row]:
    """Argilla's nested records: id, metadata and fields as columns (a field wins over metadata of its name), and
    per question (of any record's responses or suggestions) the value its submitted responses agree on."""
    questions = list(dict.fromkeys(name for record in records for key in ("responses", "suggestions")
                                   for name in _dict_or_empty(record.get(key))))
    return [_record_row(record, questions) for record in records]


def _record_row(record: dict, questions: list[str]) -> Row:
    fields = record.get("fields")
    if not isinstance(fields, dict):
        return Row({}, "an Argilla record without fields; export the records again with dataset.records.to_json")
    values = {"id": record.get("id"), **_dict_or_empty(record.get("metadata")), **fields}
    responses, answers = _dict_or_empty(record.get("responses")), {}
    for question in questions:
        given = [(response.get("value"), response.get("status"))
                 for response in _listed_or_empty(responses.get(question)) if isinstance(response, dict)]
        values[question], why = agreed(question, given, record.get("status"))
        answers.update({question: why} if why else {})
    return Row(values, None, answers)


def agreed(question: str, given: list[tuple[Any, str | None]], record_status: str | None) -> tuple[Any, str | None]:
    """The label of one question: the value every submitted response gives (None when none is submitted), or None
    and why there is no one label."""
    labels = []
    for value in (value for value, status in given if counts_as_label(status, record_status)):
        if isinstance(value, list) and len(value) < 2:  # a multi-label answer of one label (or of none)
            value = value[0] if value else None
        if isinstance(value, (list, dict)):
            return None, several_choices(question, value if isinstance(value, list) else [json.dumps(value)], "Argilla")
        labels += [] if value is None else [value]
    distinct = list(dict.fromkeys(labels))
    if len(distinct) > 1:
        return None, (f"annotators disagree on {question!r}: {', '.join(map(str, distinct))}; resolve it in Argilla "
                      "and export again")
    return (distinct[0] if distinct else None), None


def counts_as_label(status: str | None, record_status: str | None) -> bool:
    """Whether a response is a label: submitted ones are, drafts and discarded ones are not. Where responses carry no
    status (the SDK's records.to_json writes value and user_id only) the record's tells: completed, or none given."""
    if status is not None:
        return status == SUBMITTED
    return record_status in (None, COMPLETED)


def is_argilla_flat(columns) -> bool:
    """Columns named `<question>.responses` or `<question>.suggestion`: Argilla's flat records."""
    return any(str(column).endswith((RESPONSES, SUGGESTION)) for column in columns)


def argilla_flat(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Argilla's flat records: per question a column of the value its submitted responses agree on, in place of
    its response and suggestion columns; and, a column per question, why a row's answer is not one label."""
    questions = list(dict.fromkeys(str(column)[: -len(suffix)] for column in frame.columns
                                   for suffix in (RESPONSES, SUGGESTION) if str(column).endswith(suffix)))
    status = frame["status"] if "status" in frame else pd.Series(None, index=frame.index, dtype=object)
    labels = frame.drop(columns=[f"{q}{suffix}" for q in questions for suffix in FLAT_SUFFIXES
                                 if f"{q}{suffix}" in frame.columns])
    why = pd.DataFrame(index=frame.index)
    for question in questions:
        responses = frame.get(f"{question}{RESPONSES}", pd.Series(None, index=frame.index, dtype=object))
        statuses = frame.get(f"{question}{RESPONSES}.status", pd.Series(None, index=frame.index, dtype=object))
        answered = [_flat_answer(question, *cells) for cells in zip(responses, statuses, status)]
        labels[question] = pd.Series([label for label, _ in answered], index=frame.index, dtype=object)
        why[question] = pd.Series([reason for _, reason in answered], index=frame.index, dtype=object)
    return labels, why


def _flat_answer(question: str, responses: Any, statuses: Any, record_status: Any) -> tuple[Any, str | None]:
    try:
        values, states = listed(responses), listed(statuses)
    except ValueError:
        return None, (f"cannot read {question + RESPONSES!r} as a list of answers; export the records as JSON Lines "
                      "or Parquet")
    states += [None] * (len(values) - len(states))
    return agreed(question, list(zip(values, states)), record_status if isinstance(record_status, str) else None)


def listed(cell: Any) -> list:
    """A flat export's list cell as a list: a list, an array (Parquet), or its text as JSON, as Python writes a list
    (pandas' to_csv) or as NumPy does (the datasets library's to_csv: no commas). Empty: []. ValueError otherwise."""
    if cell is None or cell is pd.NA or (isinstance(cell, float) and cell != cell):
        return []
    if isinstance(cell, (list, tuple)):
        return list(cell)
    if hasattr(cell, "tolist") and not isinstance(cell, str):  # a NumPy array; a NumPy scalar is no list
        return _must_be_list(cell.tolist(), cell)
    text = str(cell).strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        value = _written_list(text)
    return _must_be_list(value, text)


def _must_be_list(value: Any, cell: Any) -> list:
    if not isinstance(value, list):
        raise ValueError(f"not a list: {str(cell)[:40]!r}")
    return value


def _written_list(text: str) -> list:
    """`['a', 'b']` or `['a' 'b']` read token by token: adjacent quoted strings are items, never one joined string."""
    try:
        tokens = [token for token in tokenize.generate_tokens(io.StringIO(text).readline)
                  if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER)]
    except (tokenize.TokenError, SyntaxError) as err:
        raise ValueError(str(err)) from None
    if len(tokens) < 2 or (tokens[0].string, tokens[-1].string) != ("[", "]"):
        raise ValueError(f"not a list: {text[:40]!r}")
    items = []
    for token in tokens[1:-1]:
        if token.type == tokenize.STRING:
            items.append(ast.literal_eval(token.string))
        elif token.string == "None":
            items.append(None)
        elif token.string != ",":
            raise ValueError(f"not a list of strings: {text[:40]!r}")
    return items


# --- anything else: flat objects (Label Studio's JSON-MIN, Argilla's flat records as JSON) -------------------------

def flat_rows(records: list[dict]) -> list[Row]:
    """Flat objects as they are. Label Studio's JSON-MIN writes one choice as the label itself and several as
    {"choices": [...]}: that is several labels for the column."""
    return [Row(record, None, {column: several_choices(column, value["choices"], "Label Studio")
                               for column, value in record.items() if json_min_choices(value)})
            for record in records]


def json_min_choices(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"choices"} and isinstance(value["choices"], list)


def several_choices(column: str, choices: list, tool: str) -> str:
    """The reason a row whose answer holds several labels is quarantined."""
    return (f"several choices for {column!r} ({', '.join(map(str, choices))}): nichetune takes one label per text; "
            f"keep one in {tool} and export again")


def _listed_or_empty(value: Any) -> list:
    return value if isinstance(value, list) else []


def _dict_or_empty(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


CONVERTERS: dict[str, Callable[[list[dict]], list[Row]]] = {
    "label_studio": label_studio_rows, "argilla": argilla_rows, "flat": flat_rows}
