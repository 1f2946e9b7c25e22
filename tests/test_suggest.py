"""`nichetune suggest`: the pool's texts ranked by what the champion is least sure of (spread out, or at random as
the control), never a labeled, quarantined or already suggested text, written for a spreadsheet, Label Studio and
Argilla, and recorded for an audit. Real complaints (CFPB) on the tiny BERT."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.batches import UNLABELED
from tasks.config import FinetuneParams, IngestParams, Paths, load_params
from tasks.finetune import finetune
from tasks.ingest import ingest_batch
from tasks.portfolio import load_classifier
from tasks.register import _experiment_id, _log_model, _tracking, tracking_uri
from tasks.suggest import cluster_picks, margins, pool_vectors, rank
from tasks.spreadsheet import write_workbook
from tests.conftest import cfpb_sample, make_project, nichetune, project_params

LABELED = cfpb_sample(per_class=6)  # 24 real complaints of four issues
_MORE = cfpb_sample(per_class=20)
POOL = _MORE[~_MORE["text"].isin(LABELED["text"])].drop_duplicates("text")  # other complaints, labels dropped


def test_margins_and_cluster_picks():
    probs = np.array([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]])
    assert margins(probs) == pytest.approx([0.1, 0.85, 0.01])
    groups = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]  # three topics, each a center and two texts beside it
    points = np.array([point for x, y in groups for point in ((x, y), (x - 0.2 * y, y + 0.2 * x),
                                                              (x + 0.2 * y, y - 0.2 * x))])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    unsure = np.array([0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9])
    assert cluster_picks(points, unsure, 3, seed=0) == [6, 0, 3]  # each topic's center, the least sure first
    assert sorted(cluster_picks(points, unsure, 20, seed=0)) == list(range(9))  # no more than there are
    same = np.repeat(points[:1], 4, axis=0)  # four copies of one text: one cluster; the most unsure fills the other
    assert cluster_picks(same, np.array([0.1, 0.4, 0.3, 0.2]), 2, seed=0) == [0, 1]


@pytest.fixture(scope="module")
def classifier(tiny_backbone, tmp_path_factory):
    train = LABELED.rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=3, batch_size=8, max_length=64)
    return load_classifier(finetune(train, cfg, seed=0, out_dir=tmp_path_factory.mktemp("suggest")).model_dir)


def test_each_strategy_picks_what_it_says(classifier):
    pool = pd.DataFrame({"nichetune_id": [f"id{i}" for i in range(len(POOL))], "text": POOL["text"].tolist()})
    probs = classifier.predict_proba(pool["text"].tolist())
    order = np.argsort(margins(probs), kind="stable")
    uncertain = rank(pool, classifier, "uncertainty", 5, 1, seed=0)
    assert uncertain.frame["nichetune_id"].tolist() == [f"id{i}" for i in order[:5]]
    assert uncertain.frame["suggested_label"].tolist() == [classifier.labels[probs[i].argmax()] for i in order[:5]]
    diverse = rank(pool, classifier, "diverse", 5, 3, seed=0)
    assert set(diverse.frame["nichetune_id"]) <= {f"id{i}" for i in order[:15]}  # from the shortlist only
    assert diverse.frame["nichetune_id"].is_unique and len(diverse.frame) == 5
    first, again = (rank(pool, classifier, "random", 5, 1, seed=3) for _ in range(2))
    assert first.frame.equals(again.frame) and first.frame["nichetune_id"].is_unique


class CountingEmbed:
    """The classifier, counting the texts it embeds."""

    def __init__(self, classifier):
        self.classifier, self.embedded = classifier, 0

    def __getattr__(self, name):
        return getattr(self.classifier, name)

    def embed(self, texts):
        self.embedded += len(texts)
        return self.classifier.embed(texts)


def test_the_pools_sentence_vectors_are_kept_and_only_new_texts_embedded(classifier, tmp_path):
    pool = pd.DataFrame({"nichetune_id": [f"id{i}" for i in range(len(POOL))], "text": POOL["text"].tolist(),
                         "key": [f"key{i}" for i in range(len(POOL))]})
    first, later = pool.iloc[: len(pool) // 2], pool.iloc[::-1]  # a later batch: more texts, in another order
    counting = CountingEmbed(classifier)
    vectors = pool_vectors(first, counting, tmp_path)
    assert counting.embedded == len(first)
    np.testing.assert_allclose(vectors, classifier.embed(first["text"].tolist()), atol=1e-5)
    again = pool_vectors(later, counting, tmp_path)
    assert counting.embedded == len(pool)  # the first half came from the file
    np.testing.assert_allclose(again, classifier.embed(later["text"].tolist()), atol=1e-5)
    ranked = rank(later, classifier, "diverse", 5, 3, seed=0, vectors=again)
    assert ranked.frame.equals(rank(later, classifier, "diverse", 5, 3, seed=0).frame)
    (tmp_path / next(tmp_path.glob("*.npz")).name).write_bytes(b"cut short")  # a damaged file: computed again
    assert len(pool_vectors(first, counting, tmp_path)) == len(first) and counting.embedded == len(pool) + len(first)


def test_a_batch_comes_back_from_label_studio_and_argilla_in_the_dataset_columns(tmp_path):
    """The README's tickets: text in `body`, label in `queue`, `created` and `ticket_id`, a `channel` column; one
    pool text had no time. What each tool exports of the batch reads back under those names."""
    from tasks.ingest import prepare
    from tasks.readers import read_table
    from tasks.suggest import Ranked, write_batch

    ingest_cfg = IngestParams(dataset="tickets", text_column="body", label_column="queue", timestamp_column="created",
                              id_column="ticket_id", metadata_columns=["channel"])
    names = {"text": "body", "label": "queue", "timestamp": "created", "id": "ticket_id", "channel": "channel"}
    texts = POOL["text"].head(2).tolist()
    frame = pd.DataFrame({"nichetune_id": ["a1", "b2"], "text": texts, "suggested_label": ["x", "y"],
                          "score": [0.6, 0.5], "margin": [0.2, 0.1],
                          "timestamp": [pd.Timestamp("2023-07-03 10:00", tz="UTC"), pd.NaT], "id": ["T-1", "T-2"],
                          "channel": ["email", "chat"]})
    files = write_batch(Ranked(frame, "diverse"), ["x", "y"], tmp_path / "0001", "tickets/3", "tickets", names)
    table = pd.read_csv(files["csv"], dtype=str, keep_default_na=False)
    assert table.columns.tolist() == ["nichetune_id", "body", "created", "ticket_id", "channel", "suggested_label",
                                      "score", "queue"]
    assert table["created"].tolist() == ["2023-07-03T10:00:00Z", ""]
    config = ET.fromstring(files["label_studio_config"].read_text())
    assert config.find("Text").get("value") == "$body" and config.find("Choices").get("name") == "queue"

    tasks = json.loads(files["label_studio"].read_text())
    export = [{"id": 7 + number, "data": task["data"], "predictions": [], "annotations": [
        {"id": 1, "was_cancelled": False, "result": [{**task["predictions"][0]["result"][0], "origin": "manual"}]}]}
        for number, task in enumerate(tasks)]
    (tmp_path / "label_studio.json").write_text(json.dumps(export))
    records = [json.loads(line) for line in files["argilla"].read_text().splitlines()]
    script = files["argilla_script"].read_text()
    assert "TextField(name='body')" in script and "LabelQuestion(name='queue'" in script
    assert "['created', 'ticket_id', 'channel']" in script and "'queue': 'queue.suggestion'" in script
    metadata = ["created", "ticket_id", "channel"]  # as Argilla's records.to_json gives the logged records back
    nested = [{"id": r["id"], "status": "completed", "fields": {"body": r["body"]},
               "metadata": {key: r[key] for key in metadata if key in r}, "suggestions": {},
               "responses": {"queue": [{"value": r["queue"], "user_id": "u1", "status": "submitted"}]}}
              for r in records]
    (tmp_path / "argilla.json").write_text(json.dumps(nested))
    for export_file in ("label_studio.json", "argilla.json"):
        read = read_table(tmp_path / export_file, label_column="queue").frame
        assert read["body"].tolist() == texts and read["queue"].tolist() == ["x", "y"]
        assert read["ticket_id"].tolist() == ["T-1", "T-2"] and read["channel"].tolist() == ["email", "chat"]
        assert read["created"].iloc[0] == "2023-07-03T10:00:00Z" and read["created"].iloc[1] in ("", None)
        prepared, _, _ = prepare(read, ingest_cfg, ["x", "y"], tmp_path / export_file)  # what ingest stores
        assert prepared["timestamp"].iloc[0] == pd.Timestamp("2023-07-03 10:00", tz="UTC")
        assert pd.isna(prepared["timestamp"].iloc[1])  # quarantined there: "missing or unparseable timestamp"


def test_columns_named_as_the_tools_refuse_go_out_in_their_form_and_come_back_under_the_datasets_names(tmp_path):
    """Argilla takes lowercase field, question and metadata names, a Label Studio `$variable` only word characters:
    `Ticket Body` goes out as `ticket_body`, and the labeled exports are read under the dataset's names again."""
    from tasks.ingest import dataset_names, prepare
    from tasks.readers import read_table
    from tasks.suggest import Ranked, write_batch

    cfg = IngestParams(dataset="tickets", text_column="Ticket Body", label_column="Queue",
                       timestamp_column="Created At", id_column="Ticket-ID", metadata_columns=["Channel"])
    names = {"text": "Ticket Body", "label": "Queue", "timestamp": "Created At", "id": "Ticket-ID",
             "Channel": "Channel"}
    texts = POOL["text"].head(2).tolist()
    frame = pd.DataFrame({"nichetune_id": ["a1", "b2"], "text": texts, "suggested_label": ["x", "y"],
                          "score": [0.6, 0.5], "margin": [0.2, 0.1],
                          "timestamp": [pd.Timestamp("2023-07-03 10:00", tz="UTC")] * 2, "id": ["T-1", "T-2"],
                          "Channel": ["email", "chat"]})
    files = write_batch(Ranked(frame, "diverse"), ["x", "y"], tmp_path / "0001", "tickets/3", "tickets", names)
    assert pd.read_csv(files["csv"]).columns[1] == "Ticket Body"  # a spreadsheet takes any name
    config = ET.fromstring(files["label_studio_config"].read_text())
    assert config.find("Text").get("value") == "$ticket_body" and config.find("Choices").get("name") == "queue"
    script = files["argilla_script"].read_text()
    assert "TextField(name='ticket_body')" in script and "LabelQuestion(name='queue'" in script
    assert "['created_at', 'ticket_id', 'channel']" in script

    tasks = json.loads(files["label_studio"].read_text())
    export = [{"id": 7, "data": task["data"], "annotations": [
        {"id": 1, "result": [{**task["predictions"][0]["result"][0], "origin": "manual"}]}]} for task in tasks]
    (tmp_path / "label_studio.json").write_text(json.dumps(export))
    records = [json.loads(line) for line in files["argilla"].read_text().splitlines()]
    nested = [{"id": r["id"], "status": "completed", "fields": {"ticket_body": r["ticket_body"]},
               "metadata": {key: r[key] for key in ("created_at", "ticket_id", "channel")},
               "responses": {"queue": [{"value": r["queue"], "status": "submitted"}]}} for r in records]
    (tmp_path / "argilla.json").write_text(json.dumps(nested))
    for export_file in ("label_studio.json", "argilla.json"):
        read = dataset_names(read_table(tmp_path / export_file, label_column="Queue").frame, cfg)
        prepared, _, _ = prepare(read, cfg, ["x", "y"], tmp_path / export_file)
        assert prepared["text"].tolist() == texts and prepared["label"].tolist() == ["x", "y"]
        assert prepared["id"].tolist() == ["T-1", "T-2"] and prepared["Channel"].tolist() == ["email", "chat"]
        assert (prepared["timestamp"] == pd.Timestamp("2023-07-03 10:00", tz="UTC")).all()


def test_a_batch_number_is_never_reused_after_a_record_is_deleted_nor_taken_twice(tmp_path):
    from tasks.errors import DataError
    from tasks.suggest import RECORDS_DIR, Ranked, next_number, record_batch

    records, out_root = tmp_path / RECORDS_DIR / "tickets", tmp_path / "outputs" / "suggestions"
    assert next_number(tmp_path, "tickets", out_root) == 1
    records.mkdir(parents=True)
    for number in (1, 2):
        (records / f"{number:04d}.json").write_text("{}")
        (out_root / "tickets" / f"{number:04d}").mkdir(parents=True)
    (records / "0002.json").unlink()  # batch 2 released: its texts may be suggested again
    assert next_number(tmp_path, "tickets", out_root) == 3  # its files stay as they were
    ranked = Ranked(pd.DataFrame({"nichetune_id": ["a"], "text": ["t"], "suggested_label": ["x"], "score": [0.5],
                                  "margin": [0.1]}), "random")
    record_batch(tmp_path, "tickets", 3, ranked, ["k"], {}, "tickets/1", out_root / "tickets" / "0003", {})
    with pytest.raises(DataError, match="another `nichetune suggest` for dataset 'tickets' recorded batch 3"):
        record_batch(tmp_path, "tickets", 3, ranked, ["k"], {}, "tickets/1", out_root / "tickets" / "0003", {})
    assert json.loads((records / "0003.json").read_text())["text_keys"] == ["k"]


def test_two_columns_the_tools_would_name_alike_are_refused_in_one_line():
    from tasks.errors import DataError
    from tasks.labeling_tools import tool_names

    with pytest.raises(DataError, match="columns 'Body' and 'body' are both 'body' in a labeling tool; rename one"):
        tool_names({"text": "Body", "body": "body"})


@pytest.mark.parametrize("filled_in", ["csv", "csv saved as a workbook", "the batch's workbook"])
def test_a_filled_in_batch_stores_its_texts_as_the_pool_did_not_as_escaped_for_spreadsheets(tmp_path, filled_in):
    """The CSV and the workbook escape a text a spreadsheet would run as a formula; ingest takes the escape off
    again, whichever comes back, and a CSV a spreadsheet saved as a workbook too."""
    from openpyxl import load_workbook

    from tasks.suggest import Ranked, write_batch

    root = make_project(tmp_path / "project", LABELED, project_params("unused"))
    texts = ["-the lender took $300 twice", "=HYPERLINK(\"x\") in my statement", "'quoted' fees"]
    frame = pd.DataFrame({"nichetune_id": ["a", "b", "c"], "text": texts, "suggested_label": ["x"] * 3,
                          "score": [0.5] * 3, "margin": [0.1] * 3, "timestamp": pd.Timestamp("2023-07-03", tz="UTC"),
                          "id": ["s1", "s2", "s3"]})
    cfg = IngestParams(**{**project_params("unused")["ingest"], "path": None})
    names = {"text": "text", "label": "issue", "timestamp": "date_received", "id": "complaint_id"}
    files = write_batch(Ranked(frame, "diverse"), ["x"], tmp_path / "0001", "complaints/1", "complaints", names)
    filled = pd.read_csv(files["csv"], dtype=str, keep_default_na=False)
    escaped = ["'" + texts[0], "'" + texts[1], texts[2]]  # safe to open
    sheet = load_workbook(files["workbook"]).active
    assert filled["text"].tolist() == escaped == [cell.value for cell in sheet["B"][1:]]
    filled = filled.assign(issue="x")
    if filled_in == "csv":
        source = root / "filled.csv"
        filled.to_csv(source, index=False)
    elif filled_in == "csv saved as a workbook":
        source = root / "filled.xlsx"
        write_workbook(filled, source)
    else:
        book = load_workbook(files["workbook"])
        column = [cell.value for cell in book.active[1]].index("issue") + 1
        for row in range(2, book.active.max_row + 1):
            book.active.cell(row, column, "x")
        source = root / "filled.xlsx"
        book.save(source)
    report = ingest_batch(cfg, [], root, source, announce=False)
    assert pd.read_parquet(root / report.batch)["text"].tolist() == texts


def test_a_quarantined_text_is_never_suggested_though_its_file_escapes_it_for_spreadsheets(tmp_path):
    """Labeled rows sent to quarantine (no label) whose texts a spreadsheet would run as formulas, and the same
    texts in the pool: the quarantine file stores them with an apostrophe, and they are still recognised."""
    from tasks.suggest import candidates

    risky = pd.DataFrame({"complaint_id": ["q1", "q2"], "date_received": ["2023-06-30", "2023-06-30"],
                          "text": ["-the lender took $300 twice", "=HYPERLINK(\"x\") in my statement"], "issue": ""})
    root = make_project(tmp_path / "project", pd.concat([LABELED, risky]), project_params("unused"))
    cfg = IngestParams(**{**project_params("unused")["ingest"], "path": None})
    report = ingest_batch(cfg, [], root, root / "data" / "labeled.csv", announce=False)
    assert report.reasons == {"missing label": 2}
    quarantined = pd.read_csv(root / report.quarantine, dtype=str, keep_default_na=False)
    assert quarantined["text"].str.startswith("'").all()  # safe to open in a spreadsheet
    pool = pd.concat([POOL.head(3), risky]).drop(columns=["issue"])
    pool.to_csv(root / "pool.csv", index=False)
    ingest_batch(cfg, [], root, root / "pool.csv", store=UNLABELED, announce=False)
    frame, _ = candidates(root, "complaints", "text")
    assert sorted(frame["text"]) == sorted(POOL["text"].head(3))


@pytest.mark.parametrize("export", ["JSON-MIN", "CSV"])
def test_a_label_studio_export_that_stamps_the_labeling_time_keeps_the_pools_timestamp_and_id(tmp_path, export):
    """Label Studio's JSON-MIN and CSV exports write the annotation's time into `created_at` and (JSON-MIN) the
    task's id into `id`, Label Studio's own names and params.yaml's default timestamp column: the texts keep the
    time and id the pool stored, so that texts labeled today do not fill the holdout (the newest rows)."""
    from tasks.suggest import candidates

    as_tool_names = {"date_received": "created_at", "complaint_id": "id"}
    params = project_params("unused", ingest={**project_params("unused")["ingest"], "timestamp_column": "created_at",
                                              "id_column": "id"})
    root = make_project(tmp_path / "project", LABELED.rename(columns=as_tool_names), params)
    cfg = IngestParams(**{**params["ingest"], "path": None})
    ingest_batch(cfg, [], root, root / "data" / "labeled.csv", announce=False)
    POOL.head(3).drop(columns=["issue"]).rename(columns=as_tool_names).to_csv(root / "pool.csv", index=False)
    ingest_batch(cfg, [], root, root / "pool.csv", store=UNLABELED, announce=False)
    pool, _ = candidates(root, "complaints", "text")
    labeled_now = {"annotator": 1, "annotation_id": 12, "created_at": "2026-12-07T21:04:11.512Z",
                   "updated_at": "2026-12-07T21:04:11.512Z", "lead_time": 3.2}
    rows = [{"text": row.text, "nichetune_id": row.nichetune_id, "id": 40 + i, "issue": LABELED["issue"].iloc[0],
             **labeled_now} for i, row in enumerate(pool.itertuples())]
    source = root / ("export.json" if export == "JSON-MIN" else "export.csv")
    if export == "JSON-MIN":
        source.write_text(json.dumps(rows))
    else:  # the CSV keeps a data key named id, so give the pool's ids back as Label Studio does
        pd.DataFrame([{**row, "id": pooled} for row, pooled in zip(rows, pool["id"])]).to_csv(source, index=False)
    report = ingest_batch(cfg, [], root, source, announce=False)
    assert report.accepted == 3, report
    stored = pd.read_parquet(root / report.batch).set_index("text").loc[pool["text"]]
    assert stored["timestamp"].tolist() == pd.to_datetime(pool["timestamp"], utc=True).tolist()
    assert stored["id"].tolist() == pool["id"].tolist()


@pytest.fixture
def project(tmp_path, tiny_backbone) -> Path:
    """A project with the labeled complaints stored, a pool that repeats two labeled texts, and a champion."""
    root = make_project(tmp_path / "project", LABELED, project_params(str(tiny_backbone)))
    cfg = IngestParams(**{**project_params("unused")["ingest"], "path": None})
    ingest_batch(cfg, [], root, root / "data" / "labeled.csv", announce=False)
    pool_file = root / "pool.csv"  # as a CRM exports them: with their ids and dates, which labeled rows need
    pd.concat([POOL, LABELED.head(2)]).drop(columns=["issue"]).to_csv(pool_file, index=False)
    ingest_batch(cfg, [], root, pool_file, store=UNLABELED)
    paths = Paths.of(root, load_params(root / "params.yaml"))
    train = LABELED.rename(columns={"issue": "label"})[["text", "label"]]
    cfg_model = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=2, batch_size=8, max_length=64)
    model_dir = finetune(train, cfg_model, seed=0, out_dir=tmp_path / "model").model_dir
    uri = tracking_uri(paths)
    with _tracking(uri), mlflow.start_run(experiment_id=_experiment_id("tests", uri, paths)):
        info = _log_model(model_dir, "complaints")
    MlflowClient(uri, registry_uri=uri).set_registered_model_alias("complaints", "champion",
                                                                  str(info.registered_model_version))
    return root



@pytest.mark.slow
def test_suggest_writes_files_the_tools_import_and_records_the_batch(project, monkeypatch, capsys):
    code, out, err = nichetune(project, monkeypatch, capsys, "suggest", "--n", "6")
    assert code == 0, err
    assert f"6 of {len(POOL)} unlabeled texts suggested by complaints/1 (diverse)" in out  # labeled repeats left out
    folder = project / "outputs" / "suggestions" / "complaints" / "0001"
    table = pd.read_csv(folder / "suggestions.csv", dtype={"complaint_id": str})
    assert len(table) == 6 and set(table["text"]) <= set(POOL["text"]) and not set(table["text"]) & set(LABELED["text"])
    labels = sorted(LABELED["issue"].unique())
    assert table["issue"].isna().all()  # the dataset's label column, to fill in
    by_text = POOL.set_index("text")
    assert table["complaint_id"].tolist() == by_text.loc[table["text"], "complaint_id"].astype(str).tolist()
    assert table["date_received"].str[:10].tolist() == by_text.loc[table["text"], "date_received"].tolist()
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert [task["data"]["text"] for task in tasks] == table["text"].tolist()
    assert [task["data"]["complaint_id"] for task in tasks] == table["complaint_id"].tolist()
    for task in tasks:  # Label Studio's pre-annotation: the Choices tag `issue` (the label column) on the Text tag
        (prediction,) = task["predictions"]
        (result,) = prediction["result"]
        assert (result["from_name"], result["to_name"], result["type"]) == ("issue", "text", "choices")
        assert result["value"]["choices"][0] in labels and 0 < prediction["score"] <= 1
        assert prediction["score"] == round(prediction["score"], 4)  # the CSV's figure, not float32 noise
        assert prediction["model_version"] == "complaints/1"
    config = ET.fromstring((folder / "label_studio_config.xml").read_text())
    assert [choice.get("value") for choice in config.iter("Choice")] == labels
    assert config.find("Text").get("value") == "$text" and config.find("Choices").get("name") == "issue"
    records = [json.loads(line) for line in (folder / "argilla_records.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == table["text"].tolist() and all(r["issue"] in labels for r in records)
    assert [r["complaint_id"] for r in records] == table["complaint_id"].tolist()
    compile((folder / "log_to_argilla.py").read_text(), "log_to_argilla.py", "exec")  # valid Python
    record = json.loads((project / "data" / "suggestions" / "complaints" / "0001.json").read_text())
    assert record["model"] == "complaints/1" and record["strategy"] == "diverse" and len(record["text_keys"]) == 6
    assert record["pool_version"]["rows"] == len(POOL) + 2
    (cached,) = (project / "outputs" / "cache").glob("suggest-vectors-*.npz")  # the pool's vectors, for the next
    assert len(np.load(cached)["keys"]) == len(POOL)
    code, out, _ = nichetune(project, monkeypatch, capsys, "suggest", "--n", "100", "--strategy", "random")
    assert code == 0 and f"{len(POOL) - 6} of {len(POOL) - 6} unlabeled texts" in out  # the first batch is out
    second = pd.read_csv(project / "outputs" / "suggestions" / "complaints" / "0002" / "suggestions.csv")
    assert not set(second["text"]) & set(table["text"])
    code, _, err = nichetune(project, monkeypatch, capsys, "suggest")
    assert code == 2 and err.count("\n") == 1 and "already suggested" in err

    # two of the first batch come back labeled in Label Studio's export and one in the filled-in CSV, as they
    # come: the labeled batch takes them, and the audit counts them against that batch
    export = [{"id": number, "data": task["data"], "predictions": [], "annotations": [{
        "id": 10 + number, "was_cancelled": False, "updated_at": "2026-12-06T10:00:00Z",
        "result": [{**task["predictions"][0]["result"][0], "origin": "manual"}]}]}
        for number, task in enumerate(tasks[:2], 1)]
    (project / "project-1-at-2026-12-06.json").write_text(json.dumps(export))
    cfg = IngestParams(**{**project_params("unused")["ingest"], "path": None})
    report = ingest_batch(cfg, [], project, project / "project-1-at-2026-12-06.json", announce=False)
    assert (report.accepted, report.quarantined) == (2, 0)
    stored = pd.read_parquet(project / report.batch)
    assert stored["id"].tolist() == table["complaint_id"].head(2).tolist()
    assert stored["timestamp"].dt.strftime("%Y-%m-%d").tolist() == table["date_received"].str[:10].head(2).tolist()
    filled = pd.read_csv(folder / "suggestions.csv", dtype=str, keep_default_na=False)
    filled.loc[2, "issue"] = labels[0]
    filled.to_csv(project / "filled.csv", index=False)
    report = ingest_batch(cfg, [], project, project / "filled.csv", announce=False)
    assert (report.accepted, report.reasons) == (1, {"missing label": 5})  # the rows left empty: quarantined
    code, out, _ = nichetune(project, monkeypatch, capsys, "suggest", "--list")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "suggestion batches of complaints (data/suggestions/complaints):"
    assert "0001" in lines[1] and "complaints/1  diverse: 3 of 6 labeled since" in lines[1]
    assert "0002" in lines[2] and f"random: 0 of {len(POOL) - 6} labeled since" in lines[2]
    assert f"{len(POOL) + 2} texts" in lines[1]


@pytest.mark.slow
def test_after_review_the_next_batch_is_a_file_and_a_prefect_artifact(project, prefect_harness):
    """suggest.after_review: the training flow's last step writes the batch and shows it in the Prefect UI; with
    nothing left to suggest it says so and the flow ends as it would have."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.pipeline import suggest_task

    params = load_params(project / "params.yaml", ["suggest.after_review=true", "suggest.n=4"])
    paths = Paths.of(project, params)

    @flow
    def after_review():
        return suggest_task(params, paths)

    state = after_review(return_state=True)
    folder = Path(state.result())
    assert len(pd.read_csv(folder / "suggestions.csv")) == 4 and (folder / "label_studio_tasks.json").is_file()
    with get_client(sync_client=True) as client:  # this flow's: other tests' runs share the Prefect harness
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["suggestions-complaints"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert artifact.type == "table" and "complaints/1" in artifact.description
    every_text = load_params(project / "params.yaml", ["suggest.n=1000"])

    @flow
    def nothing_left():
        suggest_task(every_text, paths)  # takes every text left
        return suggest_task(every_text, paths)

    assert nothing_left() is None
