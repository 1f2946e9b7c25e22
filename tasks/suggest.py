"""Which unlabeled texts to label next (active learning): the pool's texts ranked by what the model is least sure
of, spread over the backbone's sentence space so that a batch is not fifty near-copies, written as files that
Label Studio and Argilla import with the model's label and score as pre-annotations.

Strategies (params `suggest.strategy`):
- `uncertainty`: the smallest margins between the model's two most probable labels (calibrated probabilities);
- `diverse`: the `n x shortlist` least sure texts, clustered into `n` groups in the base backbone's sentence
  space (k-means, each text weighted by how unsure the model is of it), and from each group the text nearest its
  center (diverse mini-batch selection);
- `random`: a seeded sample, the control that active learning must beat.

The files use the dataset's column names and carry the timestamp, id and metadata the pool kept with each text, so
that a labeled export comes back through `nichetune ingest` as it is. Never suggested: texts already labeled (any
stored batch, the holdout included, also as stored with PII masked, which is how a labeling tool sends a suggested
text back), texts quarantined from a labeled file, and texts of earlier suggestion batches (they are with the
labelers). Each batch is recorded in
data/suggestions/<dataset>/<number>.json (git-tracked, no texts: their hashes, the pool's DVC version, the model
version and the strategy), so that an audit can tell which labels were asked for and why."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import cores
from tasks.config import IngestParams
from tasks.errors import DataError
from tasks.labeling_tools import tool_names

RECORDS_DIR = Path("data/suggestions")  # one JSON per batch and dataset, in git
STRATEGIES = ("uncertainty", "diverse", "random")
TO_NAME = "text"  # the Label Studio Text tag; its Choices tag is named like the label column, the export's column


@dataclass(frozen=True)
class Ranked:
    """One batch: the chosen texts in the order to label them, with the model's label, its probability and the
    margin that made each uncertain."""

    frame: pd.DataFrame  # nichetune_id, text, suggested_label, score, margin, then the pool's timestamp, id, ...
    strategy: str

    def kept(self, names: dict[str, str]) -> list[dict]:
        """Per text, the timestamp, id and metadata the pool kept with it, under the dataset's column names (`names`:
        pipeline column -> export column, as tasks.ingest.standard_columns), as JSON values; missing ones left out."""
        extra = self.frame.drop(columns=list(RANKED_COLUMNS))
        return [{names.get(column, column): _json_value(value) for column, value in values.items()
                 if not _missing(value)} for values in extra.to_dict("records")]


RANKED_COLUMNS = ("nichetune_id", "text", "suggested_label", "score", "margin")


def _missing(value) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and value != value)


def _json_value(value):
    """A timestamp as UTC ISO 8601 (what ingest parses back), a NumPy scalar as Python's."""
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo else value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def margins(probs: np.ndarray) -> np.ndarray:
    """The gap between each row's two largest probabilities (0: a tie, 1: certain)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top = np.sort(probs, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def cluster_picks(vectors: np.ndarray, unsure: np.ndarray, n: int, seed: int) -> list[int]:
    """Diverse mini-batch selection (Zhdanov, 2019): k-means of the candidates (unit vectors) into `n` clusters,
    each candidate weighted by how unsure the model is of it (`unsure`, higher is less sure), and from each
    cluster the candidate nearest its center. The batch covers where the model is unsure rather than the
    outliers there, which a farthest-first (k-center) pick favours. Most unsure first."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    k = min(n, len(vectors))
    if k == 0:
        return []
    with warnings.catch_warnings():  # fewer distinct texts than clusters: handled below
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors,
                                                                    sample_weight=np.maximum(unsure, 1e-6))
    distance = ((vectors - fit.cluster_centers_[fit.labels_]) ** 2).sum(axis=1)
    picks = {int(members[np.argmin(distance[members])])
             for members in (np.flatnonzero(fit.labels_ == cluster) for cluster in range(k)) if len(members)}
    # identical candidates can leave a cluster empty: the next most unsure fill its place
    by_doubt = [int(i) for i in np.argsort(-unsure, kind="stable")]
    return ([i for i in by_doubt if i in picks] + [i for i in by_doubt if i not in picks])[:k]


def rank(pool: pd.DataFrame, classifier, strategy: str, n: int, shortlist: int, seed: int,
         vectors: np.ndarray | None = None) -> Ranked:
    """`n` texts of `pool` (columns nichetune_id, text) chosen by `strategy` with `classifier` (a loaded model:
    predict_proba, embed, labels). `vectors`: the pool's sentence vectors as `classifier.embed` gives them, when
    the caller has them (`pool_vectors`); else they are computed where needed."""
    from tasks.portfolio import Portfolio, unit_rows

    if strategy not in STRATEGIES:
        raise DataError(f"suggest.strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    texts = pool["text"].astype(str).tolist()
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(texts))[:n]
        probs = classifier.predict_proba([texts[i] for i in order])
        chosen, chosen_probs = order, probs
    else:
        if vectors is not None and isinstance(classifier, Portfolio):
            classifier.remember_vectors(texts, vectors)  # its sentence-vector member reads them
        probs = classifier.predict_proba(texts)
        by_margin = np.argsort(margins(probs), kind="stable")
        if strategy == "uncertainty":
            chosen = by_margin[:n]
        else:
            short = by_margin[: n * shortlist]
            shortlisted = vectors[short] if vectors is not None else classifier.embed([texts[i] for i in short])
            chosen = short[cluster_picks(unit_rows(shortlisted), 1.0 - margins(probs[short]), n, seed)]
        chosen_probs = probs[chosen]
    labels = np.asarray(classifier.labels)
    frame = pd.DataFrame({
        "nichetune_id": pool["nichetune_id"].to_numpy()[chosen], "text": [texts[i] for i in chosen],
        "suggested_label": labels[chosen_probs.argmax(axis=1)], "score": chosen_probs.max(axis=1).astype(float).round(4),
        "margin": margins(chosen_probs).astype(float).round(4)})
    kept = pool.drop(columns=["nichetune_id", "text", "key"], errors="ignore").iloc[chosen].reset_index(drop=True)
    return Ranked(pd.concat([frame, kept], axis=1), strategy)  # the timestamp, id and metadata kept with a text


def needs_vectors(classifier, strategy: str) -> bool:
    """Whether ranking the whole pool with `strategy` reads its sentence vectors: `diverse` clusters them, and an
    auto model with a sentence-vector member predicts from them."""
    from tasks.portfolio import Portfolio

    if strategy == "random":
        return False
    return strategy == "diverse" or (isinstance(classifier, Portfolio) and classifier.reads_vectors)


def vector_space(classifier) -> str:
    """A name for the sentence vectors `classifier.embed` gives: its base backbone's weights and configuration,
    and how many tokens of a text it reads, cut how. Models built on the same base share it. By the files'
    contents, not their names and times (tasks.features.backbone_fingerprint): each suggestion downloads the model
    afresh, and an adapted backbone copied inside it gets new times every time."""
    import hashlib

    from tasks.model import base_folder

    folder = Path(base_folder(classifier.model_dir, classifier.base_name))
    # bf16's vectors differ in their last digits: a space of their own (fp32 keeps the name it had before)
    precision = "" if classifier.device.precision == "fp32" else f"/{classifier.device.precision}"
    digest = hashlib.sha256(f"{classifier.max_length}/{classifier.truncation}{precision}".encode())
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + [folder / "config.json"]:
        if path.is_file():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def pool_vectors(pool: pd.DataFrame, classifier, cache_dir: Path) -> np.ndarray:
    """The sentence vectors of the pool's texts (`pool`'s `key` column names each text), as `classifier.embed`
    gives them. They depend only on the text and the base backbone, so they are kept in `cache_dir`, one file
    per vector space: a later batch computes only the texts stored since (a base backbone pass over 9,000 short
    texts is about half of a suggestion's time on 2 CPU cores)."""
    path = cache_dir / f"suggest-vectors-{vector_space(classifier)}.npz"
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as saved:
                known = dict(zip(saved["keys"].tolist(), saved["vectors"]))
        except (OSError, ValueError, KeyError):  # unreadable (a disk filled while writing): computed again
            known = {}
    keys = pool["key"].astype(str).tolist()
    missing = [i for i, key in enumerate(keys) if key not in known]
    if missing:
        texts = pool["text"].astype(str).tolist()
        for i, vector in zip(missing, classifier.embed([texts[i] for i in missing])):
            known[keys[i]] = vector
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, keys=np.asarray(list(known)), vectors=np.stack(list(known.values())))
        partial.replace(path)  # whole or not at all: a concurrent reader sees the old file or the new one
    return np.stack([known[key] for key in keys])


# ---------------------------------------------------------------- what the labeling tools import


def label_studio_tasks(ranked: Ranked, model_version: str, names: dict[str, str]) -> list[dict]:
    """Label Studio tasks with the model's label as a prediction (pre-annotation) and its probability as the
    score, for a project whose labeling config is `label_studio_config`. Each task's data holds the text and what
    the pool kept with it under the dataset's column names (`names`), which Label Studio's export gives back."""
    return [{"data": {names["text"]: row.text, "nichetune_id": row.nichetune_id, **kept},
             "predictions": [{"model_version": model_version, "score": float(row.score),
                              "result": [{"from_name": names["label"], "to_name": TO_NAME, "type": "choices",
                                          "value": {"choices": [row.suggested_label]}}]}]}
            for row, kept in zip(ranked.frame.itertuples(), ranked.kept(names))]


def label_studio_config(labels: list[str], names: dict[str, str]) -> str:
    """The labeling config (XML) of a Label Studio project that takes these tasks: one text, one choice, named so
    that the export's columns are the dataset's (`names`)."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Text name="{TO_NAME}" value={quoteattr("$" + names["text"])}/>\n  <Choices '
            f'name={quoteattr(names["label"])} toName="{TO_NAME}" choice="single" showInLine="true">\n{choices}\n'
            f'  </Choices>\n</View>\n')


SCORE, AGENT = "suggestion_score", "suggestion_agent"  # record keys the mapping sends to the label's suggestion


def argilla_records(ranked: Ranked, model_version: str, names: dict[str, str]) -> list[dict]:
    """Records for `dataset.records.log(records, mapping=argilla_mapping(names))` in Argilla 2.x: the text field,
    the model's label as the label question's suggestion with its score and agent, the id kept as the record id,
    and what the pool kept with the text as metadata (an id column named `id` is the record id)."""
    label = names["label"]
    return [{"id": row.nichetune_id, **kept, names["text"]: row.text, label: row.suggested_label,
             SCORE: float(row.score), AGENT: model_version}
            for row, kept in zip(ranked.frame.itertuples(), ranked.kept(names))]


def argilla_mapping(names: dict[str, str]) -> dict[str, str]:
    label = names["label"]
    return {label: f"{label}.suggestion", SCORE: f"{label}.suggestion.score", AGENT: f"{label}.suggestion.agent"}


def argilla_script(labels: list[str], records_file: str, dataset: str, names: dict[str, str],
                   metadata: list[str]) -> str:
    """A script that creates the Argilla dataset (settings) and logs the records with their suggestions."""
    return f'''"""Log the suggested texts into Argilla 2.x: ARGILLA_API_URL and ARGILLA_API_KEY name your server."""
import json

import argilla as rg

client = rg.Argilla()
settings = rg.Settings(
    fields=[rg.TextField(name={names["text"]!r})],
    questions=[rg.LabelQuestion(name={names["label"]!r}, labels={labels!r})],
    metadata=[rg.TermsMetadataProperty(name=name) for name in {metadata!r}],
)
dataset = rg.Dataset(name={dataset!r}, settings=settings, client=client)
if client.datasets(name={dataset!r}) is None:
    dataset.create()
else:
    dataset = client.datasets(name={dataset!r})
with open({records_file!r}, encoding="utf-8") as handle:
    records = [json.loads(line) for line in handle]
dataset.records.log(records, mapping={argilla_mapping(names)!r})
'''


def write_batch(ranked: Ranked, labels: list[str], out_dir: Path, model_version: str, dataset: str,
                names: dict[str, str]) -> dict[str, Path]:
    """The batch as CSV (id, text, what the pool kept with it, the model's label and score, and an empty label
    column to fill in) and as the same table in an Excel workbook (Excel opens a CSV in its locale's delimiter and
    code page, a workbook the same everywhere), Label Studio tasks and config, Argilla records and the script that
    logs them; returns each file by kind. Columns carry the dataset's names (`names`: pipeline column -> export
    column, as tasks.ingest.standard_columns), so that every labeled export comes back through `nichetune ingest`
    as is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"csv": out_dir / "suggestions.csv", "workbook": out_dir / "suggestions.xlsx",
             "label_studio": out_dir / "label_studio_tasks.json",
             "label_studio_config": out_dir / "label_studio_config.xml", "argilla": out_dir / "argilla_records.jsonl",
             "argilla_script": out_dir / "log_to_argilla.py"}
    from tasks.spreadsheet import escape_frame, write_workbook

    kept = pd.DataFrame(ranked.kept(names), index=ranked.frame.index)
    table = pd.concat([ranked.frame[["nichetune_id"]], ranked.frame[["text"]].rename(columns={"text": names["text"]}),
                       kept, ranked.frame[["suggested_label", "score"]]], axis=1).assign(**{names["label"]: ""})
    escape_frame(table).to_csv(files["csv"], index=False)
    # escaped as the CSV is, so that ingest takes the same escape off whichever comes back
    write_workbook(escape_frame(table), files["workbook"])
    named = tool_names({**names, **{column: column for column in kept.columns}})  # as the tools accept names
    files["label_studio"].write_text(json.dumps(label_studio_tasks(ranked, model_version, named), ensure_ascii=False,
                                                indent=1) + "\n", encoding="utf-8")
    files["label_studio_config"].write_text(label_studio_config(labels, named), encoding="utf-8")
    files["argilla"].write_text("".join(json.dumps(record, ensure_ascii=False) + "\n"
                                        for record in argilla_records(ranked, model_version, named)), encoding="utf-8")
    metadata = [named[column] for column in kept.columns if named[column] != "id"]
    files["argilla_script"].write_text(argilla_script(labels, files["argilla"].name, dataset, named, metadata),
                                       encoding="utf-8")
    return files


# ---------------------------------------------------------------- the pool, and the record of each batch


def earlier_batches(root: Path, dataset: str) -> list[dict]:
    folder = root / RECORDS_DIR / dataset
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def labeled_texts(root: Path, dataset: str) -> pd.DataFrame:
    """Every stored labeled text of the dataset (columns text and its key), the holdout's among them."""
    from tasks.ingest import KEY, batch_files

    frames = [pd.read_parquet(path, columns=["text", KEY]) for path in batch_files(root, dataset)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"text": [], KEY: []}, dtype=object)


def history(root: Path, dataset: str) -> list[dict]:
    """Each recorded batch (number, date, model, strategy, pool version) with how many of its texts have come back
    labeled: stored since in a labeled batch, as the user gave it or as it was stored (PII masked)."""
    from tasks.ingest import KEY, assemble_pool, same_text

    pool, _ = assemble_pool(root, dataset)
    back = set(pool.loc[same_text(pool, labeled_texts(root, dataset)).to_numpy(), KEY])
    return [{"batch": batch["batch"], "created_at": batch["created_at"], "model": batch["model"],
             "strategy": batch["strategy"], "pool_version": batch["pool_version"], "asked": len(batch["text_keys"]),
             "labeled": len(set(batch["text_keys"]) & back)} for batch in earlier_batches(root, dataset)]


def candidates(root: Path, dataset: str, text_column: str) -> tuple[pd.DataFrame, dict]:
    """The pool's texts that may be suggested (columns nichetune_id, text, key, then the timestamp, id and
    metadata kept with them) and its version. A quarantined row's text is in its file's `text_column`, escaped as
    for a spreadsheet."""
    from tasks.batches import QUARANTINE_DIR
    from tasks.ingest import KEY, assemble_pool, same_text
    from tasks.spreadsheet import unescape_formula

    pool, version = assemble_pool(root, dataset, every_column=True)
    if pool.empty:
        raise DataError(f"no unlabeled texts stored for dataset {dataset!r}; store some with `nichetune ingest FILE "
                        f"--unlabeled --dataset {dataset}`")
    labeled = labeled_texts(root, dataset)
    quarantined = [pd.DataFrame({"text": pd.Series(dtype=object)})]
    for path in sorted((root / QUARANTINE_DIR / dataset).glob("*.csv")):
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
        if text_column in rows:
            quarantined.append(pd.DataFrame({"text": rows[text_column].map(unescape_formula)}))
    taken = same_text(pool, labeled) | same_text(pool, pd.concat(quarantined, ignore_index=True))
    for batch in earlier_batches(root, dataset):
        taken |= pool[KEY].isin(set(batch["text_keys"]))
    keep = pool[~taken].drop_duplicates(KEY)
    other = keep[[column for column in keep.columns if column != "text" and not column.startswith("_")]]
    frame = pd.DataFrame({"nichetune_id": keep[KEY].str[:16].to_numpy(), "text": keep["text"].to_numpy(),
                          "key": keep[KEY].to_numpy()})
    frame = pd.concat([frame, other.reset_index(drop=True)], axis=1)
    return frame, version


def next_number(root: Path, dataset: str, out_root: Path) -> int:
    """The next batch's number: past every record and every batch folder written, so that a record deleted to
    release its texts never has its number, or its files, taken by the next batch."""
    taken = [path.stem for path in (root / RECORDS_DIR / dataset).glob("*.json")]
    taken += [path.name for path in (out_root / dataset).glob("*") if path.is_dir()]
    return max((int(name) for name in taken if name.isdigit()), default=0) + 1


def record_batch(root: Path, dataset: str, number: int, ranked: Ranked, keys: list[str], pool_version: dict,
                 model: str, out_dir: Path, settings: dict) -> Path:
    """data/suggestions/<dataset>/<number>.json: what was asked for, from which pool and model, and how. Never
    replaces a record: a suggest that ran at the same time and took the number first is an error to retry."""
    folder = root / RECORDS_DIR / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:04d}.json"
    record = json.dumps({
        "batch": number, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dataset": dataset,
        "model": model, "strategy": ranked.strategy, "settings": settings, "pool_version": pool_version,
        "ids": ranked.frame["nichetune_id"].tolist(), "text_keys": keys, "files": str(out_dir),
    }, indent=2) + "\n"
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(record)
    except FileExistsError:
        raise DataError(f"{path}: another `nichetune suggest` for dataset {dataset!r} recorded batch {number} while "
                        "this one ran, and its texts may be the same; run suggest again") from None
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
            out_root: Path, ingest: IngestParams, cache_dir: Path | None = None) -> Suggestion:
    """Rank the dataset's pool with the registered model `uri` and write the next batch to label, its files in
    the dataset's column names (`ingest`'s). `cache_dir` keeps the pool's sentence vectors between batches."""
    import tempfile

    from tasks.portfolio import load_classifier
    from tasks.predict import download_registered

    from tasks.ingest import standard_columns

    names = standard_columns(ingest)
    pool, version = candidates(root, dataset, names["text"])
    if pool.empty:
        raise DataError(f"every unlabeled text of dataset {dataset!r} is labeled, quarantined or already suggested; "
                        f"store more with `nichetune ingest FILE --unlabeled --dataset {dataset}`")
    number = next_number(root, dataset, out_root)
    # ranking a big pool embeds and predicts every text: it counts among the processes sharing the cores
    with cores.claim(), tempfile.TemporaryDirectory(prefix="nichetune-suggest-") as scratch:
        name, model_version, _, model_dir = download_registered(uri, tracking, scratch)
        classifier = load_classifier(model_dir)
        vectors = (pool_vectors(pool, classifier, cache_dir)
                   if cache_dir is not None and needs_vectors(classifier, strategy) else None)
        ranked = rank(pool, classifier, strategy, n, shortlist, seed + number, vectors)
        model = f"{name}/{model_version}"
        out_dir = out_root / dataset / f"{number:04d}"
        files = write_batch(ranked, list(classifier.labels), out_dir, model, dataset, names)
    keys = pool.set_index("nichetune_id").loc[ranked.frame["nichetune_id"], "key"].tolist()
    record = record_batch(root, dataset, number, ranked, keys, version, model, out_dir,
                          {"n": n, "shortlist": shortlist, "seed": seed + number})
    return Suggestion(len(ranked.frame), len(pool), model, strategy, files, record)
