"""Which unlabeled texts to label next (active learning): the pool's texts ranked by what the model is least sure
of, spread over the backbone's sentence space so that a batch is not fifty near-copies, written as files that
Label Studio and Argilla import with the model's label and score as pre-annotations.

Strategies (params `suggest.strategy`):
- `uncertainty`: the smallest margins between the model's two most probable labels (calibrated probabilities);
- `diverse`: of the `n x shortlist` least sure texts, a greedy k-center pick in the base backbone's sentence
  space, with the labeled texts as centers already taken: each next text is the one farthest from everything
  labeled or picked (core-set selection on an uncertainty shortlist);
- `random`: a seeded sample, the control that active learning must beat.

Never suggested: texts already labeled (any stored batch, the holdout included), texts quarantined from a labeled
file, and texts of earlier suggestion batches (they are with the labelers). Each batch is recorded in
data/suggestions/<dataset>/<number>.json (git-tracked, no texts: their hashes, the pool's DVC version, the model
version and the strategy), so that an audit can tell which labels were asked for and why."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.errors import DataError

RECORDS_DIR = Path("data/suggestions")  # one JSON per batch and dataset, in git
STRATEGIES = ("uncertainty", "diverse", "random")
FROM_NAME, TO_NAME = "label", "text"  # the Label Studio Choices and Text tags the export and its config use


@dataclass(frozen=True)
class Ranked:
    """One batch: the chosen texts in the order to label them, with the model's label, its probability and the
    margin that made each uncertain."""

    frame: pd.DataFrame  # nichetune_id, text, suggested_label, score, margin
    strategy: str


def margins(probs: np.ndarray) -> np.ndarray:
    """The gap between each row's two largest probabilities (0: a tie, 1: certain)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top = np.sort(probs, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def k_center(candidates: np.ndarray, centers: np.ndarray, n: int) -> list[int]:
    """Greedy k-center: `n` rows of `candidates` (unit vectors), each the farthest (cosine distance) from the
    `centers` and the rows picked before it; the first is the farthest from the centers (or row 0 without any)."""
    if len(candidates) == 0 or n <= 0:
        return []
    nearest = (1.0 - candidates @ centers.T).min(axis=1) if len(centers) else np.full(len(candidates), np.inf)
    picked: list[int] = []
    for _ in range(min(n, len(candidates))):
        index = int(np.argmax(nearest)) if len(picked) or len(centers) else 0
        picked.append(index)
        nearest = np.minimum(nearest, 1.0 - candidates @ candidates[index])
        nearest[picked] = -np.inf
    return picked


def rank(pool: pd.DataFrame, labeled_texts: list[str], classifier, strategy: str, n: int, shortlist: int,
         seed: int) -> Ranked:
    """`n` texts of `pool` (columns nichetune_id, text) chosen by `strategy` with `classifier` (a loaded model:
    predict_proba, embed, labels)."""
    from tasks.portfolio import unit_rows

    if strategy not in STRATEGIES:
        raise DataError(f"suggest.strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    texts = pool["text"].astype(str).tolist()
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(texts))[:n]
        probs = classifier.predict_proba([texts[i] for i in order])
        chosen, chosen_probs = order, probs
    else:
        probs = classifier.predict_proba(texts)
        by_margin = np.argsort(margins(probs), kind="stable")
        if strategy == "uncertainty":
            chosen = by_margin[:n]
        else:
            short = by_margin[: n * shortlist]
            vectors = unit_rows(classifier.embed([texts[i] for i in short]))
            centers = (unit_rows(classifier.embed(labeled_texts)) if labeled_texts
                       else np.zeros((0, vectors.shape[1])))
            chosen = short[k_center(vectors, centers, n)]
        chosen_probs = probs[chosen]
    labels = np.asarray(classifier.labels)
    frame = pd.DataFrame({
        "nichetune_id": pool["nichetune_id"].to_numpy()[chosen], "text": [texts[i] for i in chosen],
        "suggested_label": labels[chosen_probs.argmax(axis=1)], "score": chosen_probs.max(axis=1).round(4),
        "margin": margins(chosen_probs).round(4)})
    return Ranked(frame.reset_index(drop=True), strategy)


# ---------------------------------------------------------------- what the labeling tools import


def label_studio_tasks(ranked: Ranked, model_version: str) -> list[dict]:
    """Label Studio tasks with the model's label as a prediction (pre-annotation) and its probability as the
    score, for a project whose labeling config is `label_studio_config`."""
    return [{"data": {"text": row.text, "nichetune_id": row.nichetune_id},
             "predictions": [{"model_version": model_version, "score": float(row.score),
                              "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                                          "value": {"choices": [row.suggested_label]}}]}]}
            for row in ranked.frame.itertuples()]


def label_studio_config(labels: list[str]) -> str:
    """The labeling config (XML) of a Label Studio project that takes these tasks: one text, one choice."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Text name="{TO_NAME}" value="$text"/>\n  <Choices name="{FROM_NAME}" toName="{TO_NAME}" '
            f'choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n')


def argilla_records(ranked: Ranked, model_version: str) -> list[dict]:
    """Records for `dataset.records.log(records, mapping=ARGILLA_MAPPING)` in Argilla 2.x: the text field, the
    model's label as the `label` question's suggestion with its score and agent, the id kept as the record id."""
    return [{"id": row.nichetune_id, "text": row.text, "label": row.suggested_label, "score": float(row.score),
             "agent": model_version} for row in ranked.frame.itertuples()]


ARGILLA_MAPPING = {"label": "label.suggestion", "score": "label.suggestion.score", "agent": "label.suggestion.agent"}


def argilla_script(labels: list[str], records_file: str, dataset: str) -> str:
    """A script that creates the Argilla dataset (settings) and logs the records with their suggestions."""
    return f'''"""Log the suggested texts into Argilla 2.x: ARGILLA_API_URL and ARGILLA_API_KEY name your server."""
import json

import argilla as rg

client = rg.Argilla()
settings = rg.Settings(
    fields=[rg.TextField(name="text")],
    questions=[rg.LabelQuestion(name="label", labels={labels!r})],
)
dataset = rg.Dataset(name={dataset!r}, settings=settings, client=client)
if client.datasets(name={dataset!r}) is None:
    dataset.create()
else:
    dataset = client.datasets(name={dataset!r})
with open({records_file!r}, encoding="utf-8") as handle:
    records = [json.loads(line) for line in handle]
dataset.records.log(records, mapping={ARGILLA_MAPPING!r})
'''


def write_batch(ranked: Ranked, labels: list[str], out_dir: Path, model_version: str, dataset: str) -> dict[str, Path]:
    """The batch as CSV (id, text, the model's label and score), Label Studio tasks and config, Argilla records
    and the script that logs them; returns each file by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"csv": out_dir / "suggestions.csv", "label_studio": out_dir / "label_studio_tasks.json",
             "label_studio_config": out_dir / "label_studio_config.xml", "argilla": out_dir / "argilla_records.jsonl",
             "argilla_script": out_dir / "log_to_argilla.py"}
    from tasks.spreadsheet import escape_frame

    escape_frame(ranked.frame.drop(columns=["margin"])).to_csv(files["csv"], index=False)
    files["label_studio"].write_text(json.dumps(label_studio_tasks(ranked, model_version), ensure_ascii=False,
                                                indent=1) + "\n", encoding="utf-8")
    files["label_studio_config"].write_text(label_studio_config(labels), encoding="utf-8")
    files["argilla"].write_text("".join(json.dumps(record, ensure_ascii=False) + "\n"
                                        for record in argilla_records(ranked, model_version)), encoding="utf-8")
    files["argilla_script"].write_text(argilla_script(labels, files["argilla"].name, dataset), encoding="utf-8")
    return files


# ---------------------------------------------------------------- the pool, and the record of each batch


def earlier_batches(root: Path, dataset: str) -> list[dict]:
    folder = root / RECORDS_DIR / dataset
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def history(root: Path, dataset: str) -> list[dict]:
    """Each recorded batch (number, date, model, strategy, pool version) with how many of its texts have come back
    labeled: stored since in a labeled batch, judged on the text as the user gave it."""
    from tasks.ingest import KEY, batch_files

    labeled = set()
    for path in batch_files(root, dataset):
        labeled |= set(pd.read_parquet(path, columns=[KEY])[KEY].dropna())
    return [{"batch": batch["batch"], "created_at": batch["created_at"], "model": batch["model"],
             "strategy": batch["strategy"], "pool_version": batch["pool_version"], "asked": len(batch["text_keys"]),
             "labeled": len(set(batch["text_keys"]) & labeled)} for batch in earlier_batches(root, dataset)]


def candidates(root: Path, dataset: str) -> tuple[pd.DataFrame, dict, list[str]]:
    """The pool's texts that may be suggested (columns nichetune_id, text), its version, and the labeled texts
    (the diverse strategy's centers)."""
    from tasks.batches import QUARANTINE_DIR
    from tasks.ingest import KEY, assemble_pool, batch_files, text_hash

    pool, version = assemble_pool(root, dataset)
    if pool.empty:
        raise DataError(f"no unlabeled texts stored for dataset {dataset!r}; store some with `nichetune ingest FILE "
                        f"--unlabeled --dataset {dataset}`")
    labeled = [pd.read_parquet(path, columns=["text", KEY]) for path in batch_files(root, dataset)]
    labeled = pd.concat(labeled, ignore_index=True) if labeled else pd.DataFrame({"text": [], KEY: []})
    excluded = set(labeled[KEY].dropna())
    for path in sorted((root / QUARANTINE_DIR / dataset).glob("*.csv")):
        quarantined = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "text" in quarantined:
            excluded |= set(text_hash(quarantined["text"]).dropna())
    for batch in earlier_batches(root, dataset):
        excluded |= set(batch["text_keys"])
    keep = pool[~pool[KEY].isin(excluded)].drop_duplicates(KEY)
    frame = pd.DataFrame({"nichetune_id": keep[KEY].str[:16].to_numpy(), "text": keep["text"].to_numpy(),
                          "key": keep[KEY].to_numpy()})
    return frame, version, labeled["text"].astype(str).tolist()


def record_batch(root: Path, dataset: str, ranked: Ranked, keys: list[str], pool_version: dict, model: str,
                 out_dir: Path, settings: dict) -> Path:
    """data/suggestions/<dataset>/<number>.json: what was asked for, from which pool and model, and how."""
    folder = root / RECORDS_DIR / dataset
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("*.json"))) + 1
    path = folder / f"{number:04d}.json"
    path.write_text(json.dumps({
        "batch": number, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dataset": dataset,
        "model": model, "strategy": ranked.strategy, "settings": settings, "pool_version": pool_version,
        "ids": ranked.frame["nichetune_id"].tolist(), "text_keys": keys, "files": str(out_dir),
    }, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Suggestion:
    """What `nichetune suggest` wrote."""

    rows: int
    pool_rows: int  # texts that could be suggested
    model: str  # NAME/VERSION
    strategy: str
    files: dict[str, Path]
    record: Path


def suggest(root: Path, dataset: str, uri: str, tracking: str, strategy: str, n: int, shortlist: int, seed: int,
            out_root: Path) -> Suggestion:
    """Rank the dataset's pool with the registered model `uri` and write the next batch to label."""
    import tempfile

    from tasks.portfolio import load_classifier
    from tasks.predict import download_registered

    pool, version, labeled = candidates(root, dataset)
    if pool.empty:
        raise DataError(f"every unlabeled text of dataset {dataset!r} is labeled, quarantined or already suggested; "
                        f"store more with `nichetune ingest FILE --unlabeled --dataset {dataset}`")
    number = len(earlier_batches(root, dataset)) + 1
    with tempfile.TemporaryDirectory(prefix="nichetune-suggest-") as scratch:
        name, model_version, _, model_dir = download_registered(uri, tracking, scratch)
        classifier = load_classifier(model_dir)
        ranked = rank(pool, labeled, classifier, strategy, n, shortlist, seed + number)
        model = f"{name}/{model_version}"
        out_dir = out_root / dataset / f"{number:04d}"
        files = write_batch(ranked, list(classifier.labels), out_dir, model, dataset)
    keys = pool.set_index("nichetune_id").loc[ranked.frame["nichetune_id"], "key"].tolist()
    record = record_batch(root, dataset, ranked, keys, version, model, out_dir,
                          {"n": n, "shortlist": shortlist, "seed": seed + number})
    return Suggestion(len(ranked.frame), len(pool), model, strategy, files, record)
