"""Exports of Label Studio and Argilla ingest as they come out of the tools (issue 55): one row per text, its label
the one a person gave (never a prediction or suggestion); a text without a label, with several choices or with
annotators who disagree is quarantined with the reason; JSON-MIN and other JSON arrays of flat objects read as rows.

The texts and intents are rows of banking77 (tests/data/banking77); the files are written in the shapes the tools
write: Label Studio's JSON export and JSON-MIN (labelstud.io/guide/export), and Argilla 2.x's records.to_json and
records.to_datasets() (argilla/src/argilla/records/_io/_generic.py and _resource.py), saved by the datasets
library as the user would."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import IngestParams
from tasks.errors import DataError
from tasks.ingest import ingest_batch
from tasks.readers import LINE, PROBLEM, RAW, read_table
from tests.conftest import SLICES, make_project, project_params

BANKING = pd.read_csv(SLICES / "banking77" / "test.csv").iloc[::40].reset_index(drop=True)  # ten intents, one each
TEXTS, INTENTS = BANKING["text"].tolist(), BANKING["category"].tolist()
LABELS = sorted(set(INTENTS))
CFG = IngestParams(path=None, id_column="ls_task_id")
_datasets = itertools.count()
_ids = itertools.count(100)


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def data_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[LINE, PROBLEM, RAW])


# --- Label Studio -------------------------------------------------------------------------------------------------

def choices(*picked: str, control: str = "label") -> list[dict]:
    return [{"value": {"choices": list(picked)}, "id": f"r{next(_ids)}", "from_name": control, "to_name": "text",
             "type": "choices", "origin": "manual"}]


def annotation(task: int, result: list[dict], at: str, cancelled: bool = False, by: int = 3,
               truth: bool = False) -> dict:
    """One annotation as Label Studio's JSON export writes it."""
    return {"id": next(_ids), "completed_by": by, "result": result, "was_cancelled": cancelled, "ground_truth": truth,
            "created_at": at, "updated_at": at, "draft_created_at": None, "lead_time": 6.2, "prediction": {},
            "result_count": 0, "unique_id": f"a-{task}-{at}", "import_id": None, "last_action": None, "task": task,
            "project": 2, "updated_by": 3, "parent_prediction": None, "parent_annotation": None,
            "last_created_by": None}


def task(number: int, annotations: list[dict], predicted: str | None = None) -> dict:
    """A task of Label Studio's JSON export holding banking77 row `number`, with an optional model prediction."""
    predictions = [] if predicted is None else [{
        "id": next(_ids), "model_version": "banking-intents-1", "created_ago": "3 hours", "result": choices(predicted),
        "score": 0.91, "cluster": None, "neighbors": None, "mislabeling": 0.0, "created_at": "2026-11-02T08:00:00Z",
        "updated_at": "2026-11-02T08:00:00Z", "model": None, "model_run": None, "task": number, "project": 2}]
    return {"id": number, "annotations": annotations, "file_upload": "banking.csv", "drafts": [],
            "predictions": predictions, "data": {"text": TEXTS[number], "channel": "app"}, "meta": {},
            "created_at": "2026-11-01T09:00:00.000000Z", "updated_at": "2026-11-03T10:00:00.000000Z",
            "inner_id": number, "total_annotations": len(annotations),
            "cancelled_annotations": sum(note["was_cancelled"] for note in annotations),
            "total_predictions": len(predictions), "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 2, "updated_by": 3, "comment_authors": []}


def label_studio_export() -> list[dict]:
    """Tasks 0-2 are labeled; 3 has only a cancelled annotation, 4 only a prediction, 5 two choices; on 6 two
    annotators agree, on 7 they disagree, on 8 they disagree and a reviewer marked one as ground truth."""
    return [
        task(0, [annotation(0, choices(INTENTS[0]), "2026-11-03T10:00:00.000000Z")]),
        task(1, [annotation(1, choices(INTENTS[1]), "2026-11-03T11:00:00.000000Z"),  # relabeled: the later one
                 annotation(1, choices(INTENTS[9]), "2026-11-03T10:00:00.000000Z")], predicted=INTENTS[9]),
        task(2, [annotation(2, choices(INTENTS[2]), "2026-11-03T10:00:00.000000Z"),
                 annotation(2, choices(INTENTS[8]), "2026-11-03T12:00:00.000000Z", cancelled=True)]),
        task(3, [annotation(3, [], "2026-11-03T10:00:00.000000Z", cancelled=True)]),
        task(4, [], predicted=INTENTS[4]),
        task(5, [annotation(5, choices(INTENTS[5], INTENTS[6]), "2026-11-03T10:00:00.000000Z")]),
        task(6, [annotation(6, choices(INTENTS[6]), "2026-11-03T10:00:00.000000Z"),
                 annotation(6, choices(INTENTS[6]), "2026-11-03T09:00:00.000000Z", by=4)]),
        task(7, [annotation(7, choices(INTENTS[7]), "2026-11-03T10:00:00.000000Z"),
                 annotation(7, choices(INTENTS[3]), "2026-11-03T11:00:00.000000Z", by=4)]),
        task(8, [annotation(8, choices(INTENTS[8]), "2026-11-03T10:00:00.000000Z", truth=True),
                 annotation(8, choices(INTENTS[3]), "2026-11-03T11:00:00.000000Z", by=4)]),
    ]


SEVERAL = (f"several choices for 'label' ({INTENTS[5]}, {INTENTS[6]}): nichetune takes one label per text; keep one "
           "in Label Studio and export again")
LS_DISAGREE = (f"annotators disagree on 'label': {INTENTS[7]}, {INTENTS[3]}; mark one annotation as ground truth "
               "in Label Studio (or keep one) and export again")


def test_a_label_studio_export_is_a_row_per_task_labeled_by_what_its_annotators_agree_on(tmp_path):
    """Each annotator's latest annotation not cancelled counts; annotators who disagree are a problem to resolve
    in Label Studio, unless one annotation is marked ground truth."""
    tasks = label_studio_export()
    frame = read_table(write_json(tmp_path / "project-2-at-2026-11-03.json", tasks)).frame
    assert data_columns(frame).columns.tolist() == ["ls_task_id", "text", "channel", "label"]
    assert frame["ls_task_id"].tolist() == [str(n) for n in range(9)]
    assert frame["text"].tolist() == TEXTS[:9]
    assert frame["label"].tolist() == [INTENTS[0], INTENTS[1], INTENTS[2], None, None, None,  # never a prediction
                                       INTENTS[6], None, INTENTS[8]]
    assert frame[LINE].tolist() == list(range(1, 10))  # a record's position in the array
    assert frame[PROBLEM].tolist() == [None] * 5 + [SEVERAL, None, LS_DISAGREE, None]
    assert json.loads(frame[RAW].iloc[5]) == tasks[5]  # the task as exported, so that it can be repaired
    assert frame[RAW].iloc[[0, 1, 2, 3, 4, 6, 8]].isna().all()


def test_label_studio_json_min_and_any_json_array_of_flat_objects_read_as_rows(tmp_path):
    """JSON-MIN writes one choice as the label, several as {"choices": [...]}, and one row per annotation."""
    rows = [{"text": TEXTS[n], "channel": "app", "id": n, "label": INTENTS[n], "annotator": 3, "annotation_id": 7 + n,
             "created_at": "2026-11-03T10:00:00.000000Z", "updated_at": "2026-11-03T10:00:00.000000Z",
             "lead_time": 6.2} for n in range(3)]
    rows[2]["label"] = {"choices": [INTENTS[2], INTENTS[3]]}
    frame = read_table(write_json(tmp_path / "project-2-json-min.json", rows)).frame
    assert frame["label"].tolist()[:2] == INTENTS[:2] and frame["id"].tolist() == ["0", "1", "2"]
    assert frame["lead_time"].tolist() == ["6.2"] * 3
    assert frame[PROBLEM].tolist() == [None, None, f"several choices for 'label' ({INTENTS[2]}, {INTENTS[3]}): "
                                       "nichetune takes one label per text; keep one in Label Studio and export again"]


def test_label_studios_csv_export_writes_several_choices_as_json_text_and_the_row_says_so(tmp_path):
    """Label Studio's CSV export: one choice as the label, several as the JSON text {"choices": [...]}."""
    import csv

    rows = [{"text": TEXTS[n], "id": n, "label": INTENTS[n], "annotator": "a@example.org", "annotation_id": 7 + n,
             "created_at": "2026-11-03T10:00:00.000000Z", "updated_at": "2026-11-03T10:00:00.000000Z",
             "lead_time": 6.2} for n in range(3)]
    rows[2]["label"] = json.dumps({"choices": [INTENTS[2], INTENTS[3]]})
    path = tmp_path / "project-2-csv.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:  # as label_studio_sdk's converter writes it
        writer = csv.DictWriter(handle, fieldnames=sorted(rows[0]), quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)
    frame = read_table(path, label_column="label").frame
    assert frame["label"].tolist()[:2] == INTENTS[:2]
    assert frame[PROBLEM].tolist() == [None, None, f"several choices for 'label' ({INTENTS[2]}, {INTENTS[3]}): "
                                       "nichetune takes one label per text; keep one in Label Studio and export again"]


# --- Argilla 2.x ------------------------------------------------------------------------------------------------

USERS = ["6b3a5d57-1f1c-4f4e-9a53-2f7b3c1d0e01", "0c7e2a1e-8a7d-4c55-b0a4-7d9e1f2a3b02"]


def record(number: int, responses: list[tuple[str, str | None]], status: str, suggested: str | None = None) -> dict:
    """An Argilla 2.x record as Record.to_dict writes it (records.to_json, Dataset.to_disk's records.json): responses
    are (value, status) per user; a status of None is left out, as the SDK's own to_dict does."""
    answers = [{"value": value, "user_id": user, **({"status": state} if state else {})}
               for (value, state), user in zip(responses, USERS)]
    return {"id": f"banking-{number}", "fields": {"text": TEXTS[number]}, "metadata": {"channel": "app"},
            "suggestions": {} if suggested is None else {
                "label": {"value": suggested, "score": 0.87, "agent": "setfit-banking"}},
            "responses": {"label": answers} if answers else {}, "vectors": {}, "status": status,
            "_server_id": f"5f0c2d1e-0000-4000-8000-{number:012d}"}


def argilla_records() -> list[dict]:
    """0-2 labeled (two agree; one submitted beside a draft; no status, but the record is completed); 3 has only a
    suggestion, 4 a discarded response, 5 no status and a pending record; 6 annotators disagree."""
    return [
        record(0, [(INTENTS[0], "submitted"), (INTENTS[0], "submitted")], "completed", suggested=INTENTS[9]),
        record(1, [(INTENTS[1], "submitted"), (INTENTS[7], "draft")], "completed"),
        record(2, [(INTENTS[2], None)], "completed"),
        record(3, [], "pending", suggested=INTENTS[3]),
        record(4, [(INTENTS[4], "discarded")], "pending", suggested=INTENTS[4]),
        record(5, [(INTENTS[5], None)], "pending"),
        record(6, [(INTENTS[6], "submitted"), (INTENTS[8], "submitted")], "completed", suggested=INTENTS[6]),
    ]


DISAGREE = f"annotators disagree on 'label': {INTENTS[6]}, {INTENTS[8]}; resolve it in Argilla and export again"
ARGILLA_LABELS = [INTENTS[0], INTENTS[1], INTENTS[2], None, None, None, None]


def flat(records: list[dict]) -> dict[str, list]:
    """What records.to_dict(flatten=True) gives, and so records.to_datasets(): fields, metadata, and per question
    `label.responses`, `.users`, `.status` and `label.suggestion`, `.score`, `.agent` (None where a record has none)."""
    rows = []
    for one in records:
        row = {"id": one["id"], "status": one["status"], "_server_id": one["_server_id"], **one["fields"],
               **one["metadata"]}
        answers = one["responses"].get("label")
        if answers:
            row |= {"label.responses": [answer["value"] for answer in answers],
                    "label.responses.users": [answer["user_id"] for answer in answers],
                    "label.responses.status": [answer.get("status") or "submitted" for answer in answers]}
        suggestion = one["suggestions"].get("label")
        if suggestion:
            row |= {"label.suggestion": suggestion["value"], "label.suggestion.score": suggestion["score"],
                    "label.suggestion.agent": suggestion["agent"]}
        rows.append(row)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: [row.get(key) for row in rows] for key in keys}


def flat_records() -> dict[str, list]:
    """The flat form carries every response's status: record 2 submitted, record 5 a draft."""
    columns = flat(argilla_records())
    columns["label.responses.status"][5] = ["draft"]
    return columns


def test_an_argilla_records_json_is_a_row_per_record_labeled_by_its_submitted_responses(tmp_path):
    frame = read_table(write_json(tmp_path / "records.json", argilla_records())).frame
    assert data_columns(frame).columns.tolist() == ["id", "channel", "text", "label"]
    assert frame["text"].tolist() == TEXTS[:7]
    assert frame["label"].tolist() == ARGILLA_LABELS  # never a suggestion, a draft or a discarded response
    assert frame[PROBLEM].tolist() == [None] * 6 + [DISAGREE]
    assert json.loads(frame[RAW].iloc[6]) == argilla_records()[6]


def save_with_datasets(columns: dict[str, list], path: Path) -> Path:
    """Saved as a user saves records.to_datasets(): the datasets library's to_json (JSON Lines), to_parquet, to_csv."""
    import datasets

    exported = datasets.Dataset.from_dict(columns)
    save = {".json": exported.to_json, ".jsonl": exported.to_json, ".parquet": exported.to_parquet,
            ".csv": exported.to_csv}[path.suffix]
    save(str(path))
    return path


@pytest.mark.parametrize("name, save", [
    ("records.jsonl", save_with_datasets),
    ("records.json", save_with_datasets),  # to_json writes JSON Lines whatever the name
    ("records.parquet", save_with_datasets),
    ("records.csv", save_with_datasets),  # lists as NumPy writes them: ['a' 'b']
    ("pandas.csv", lambda columns, path: pd.DataFrame(columns).to_csv(path, index=False) or path),  # ['a', 'b']
    ("to_list.json", lambda columns, path: write_json(path, [dict(zip(columns, row))  # json.dump(to_list(...))
                                                             for row in zip(*columns.values())])),
])
def test_argillas_flat_records_read_alike_in_every_format(tmp_path, name, save):
    path = save(flat_records(), tmp_path / name)
    frame = read_table(path).frame
    assert data_columns(frame).columns.tolist() == ["id", "status", "_server_id", "text", "channel", "label"]
    assert frame["text"].tolist() == TEXTS[:7]
    assert frame["label"].tolist() == ARGILLA_LABELS
    assert frame[PROBLEM].tolist() == [None] * 6 + [DISAGREE]
    assert json.loads(frame[RAW].iloc[6])["label.responses"] in ([INTENTS[6], INTENTS[8]],
                                                                 str([INTENTS[6], INTENTS[8]]),
                                                                 f"['{INTENTS[6]}' '{INTENTS[8]}']")


def test_only_the_label_columns_answers_make_a_problem_when_it_is_named(tmp_path):
    """A second question (a comment, a multi-label topic) may differ between annotators without stopping the row."""
    records = argilla_records()[:1]
    records[0]["responses"]["comment"] = [{"value": "about top-ups", "user_id": USERS[0], "status": "submitted"},
                                          {"value": "auto top-up", "user_id": USERS[1], "status": "submitted"}]
    path = write_json(tmp_path / "records.json", records)
    assert read_table(path, label_column="label").frame[PROBLEM].tolist() == [None]
    assert read_table(path).frame[PROBLEM].tolist() == [
        "annotators disagree on 'comment': about top-ups, auto top-up; resolve it in Argilla and export again"]


@pytest.mark.parametrize("content, expected", [
    ("", "the file is empty; export a JSON array of records, or one JSON object per line"),
    ("text,label\nhello,billing\n", "not JSON (it starts with 'text,label\\nhello,bil'); export a JSON array of "
                                    "records, or one JSON object per line"),
    ('[{"text": "hello"}, ', "not valid JSON (Expecting value at line 1); export the file again"),
    ("[]", "the JSON array has no records; export the labeled records too"),
    ('["hello", "world"]', 'the JSON array holds no objects (its first item is "hello"); export one JSON object per '
                           "record"),
])
def test_a_json_file_that_is_no_export_is_one_line_data_error(tmp_path, content, expected):
    path = tmp_path / "export.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert str(caught.value) == f"{path}: {expected}"


# --- through ingest ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One DVC project; each test ingests into a dataset of its own."""
    return make_project(tmp_path_factory.mktemp("labeling-tools") / "project", pd.DataFrame({"a": [1]}),
                        project_params("unused"))


def ingest(project: Path, source: Path, cfg: IngestParams = CFG):
    dataset = f"tools{next(_datasets)}"
    return ingest_batch(cfg, LABELS, project, source, dataset)


def quarantined(project: Path, report) -> list[dict]:
    with open(project / report.quarantine, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_ingest_stores_label_studios_labeled_tasks_and_quarantines_the_rest_with_the_reason(project, tmp_path):
    report = ingest(project, write_json(tmp_path / "project-2.json", label_studio_export()))
    assert (report.rows_read, report.accepted, report.quarantined) == (9, 5, 4)
    assert report.reasons == {"missing label": 2, SEVERAL: 1, LS_DISAGREE: 1}
    stored = pd.read_parquet(project / report.batch)
    assert stored["label"].tolist() == [*INTENTS[:3], INTENTS[6], INTENTS[8]]
    assert stored["id"].tolist() == ["0", "1", "2", "6", "8"]
    rows = quarantined(project, report)
    assert [(row["ls_task_id"], row["_source_line"], row["_reason"]) for row in rows] == [
        ("3", "4", "missing label"), ("4", "5", "missing label"), ("5", "6", SEVERAL), ("7", "8", LS_DISAGREE)]
    assert json.loads(rows[2]["_raw_record"])["id"] == 5


@pytest.mark.slow
@pytest.mark.parametrize("name, write", [
    ("records.json", lambda path: write_json(path, argilla_records())),
    ("records.parquet", lambda path: save_with_datasets(flat_records(), path)),
])
def test_ingest_stores_argillas_submitted_labels_and_never_a_suggestion(project, tmp_path, name, write):
    report = ingest(project, write(tmp_path / name), IngestParams(path=None, id_column="id"))
    assert (report.rows_read, report.accepted, report.quarantined) == (7, 3, 4)
    assert report.reasons == {"missing label": 3, DISAGREE: 1}
    stored = pd.read_parquet(project / report.batch)
    assert stored["label"].tolist() == INTENTS[:3]
    assert stored["id"].tolist() == ["banking-0", "banking-1", "banking-2"]
    assert [row["id"] for row in quarantined(project, report)] == ["banking-3", "banking-4", "banking-5", "banking-6"]


@pytest.mark.slow
def test_nichetune_ingest_takes_a_label_studio_export_as_it_comes(tmp_path):
    """The command a user runs, in a subprocess, on a fresh project whose params name the label column `label`."""
    params = project_params("minilm", ingest={"dataset": "banking", "path": None, "text_column": "text",
                                              "label_column": "label", "timestamp_column": None,
                                              "id_column": "ls_task_id"})
    params["validate"]["labels"] = LABELS
    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), params)
    source = write_json(tmp_path / "project-2-at-2026-11-03.json", label_studio_export())
    done = subprocess.run([str(Path(sys.executable).parent / "nichetune"), "ingest", str(source)], cwd=root,
                          env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{source}: 9 rows read = 5 accepted + 4 quarantined (decoded as utf-8)" in done.stdout
    assert "  quarantined, missing label: 2" in done.stdout
    assert f"  quarantined, {SEVERAL}: 1" in done.stdout


@pytest.mark.slow
def test_ingest_holds_only_the_label_column_to_one_answer(project, tmp_path):
    """Annotators who wrote different comments on a record whose label they agree on: the record is stored."""
    records = argilla_records()[:1]
    records[0]["responses"]["comment"] = [{"value": "about top-ups", "user_id": USERS[0], "status": "submitted"},
                                          {"value": "auto top-up", "user_id": USERS[1], "status": "submitted"}]
    report = ingest(project, write_json(tmp_path / "records.json", records), IngestParams(path=None, id_column="id"))
    assert (report.rows_read, report.accepted, report.quarantined) == (1, 1, 0)
    assert pd.read_parquet(project / report.batch)["label"].tolist() == [INTENTS[0]]
