"""Benchmark: classification quality of nichetune's fine-tuning strategies against what users would pick
instead, on real data.

    nichetune bench quality [--quick] [--datasets NAME ...] [--methods NAME ...] [--seeds N] [--from-seed K]
                            [--finetune KEY=VALUE ...] [--out FILE] [--work-dir DIR]
                            [--note TEXT] [--data DIR]

Datasets (from --data DIR, default ../shared/data; see each folder's PROVENANCE.md, and benchmarks/sources.py for
where to get them):
- banking77_k8, banking77_k64: k examples per intent (77 intents) sampled from train with the run's seed;
  evaluated on the full test set (3,080 rows, 40 per intent). Four intents have fewer than 64 training rows
  (35, 41, 59, 61): k=64 takes all of theirs, so k=64 has 4,868 training rows, not 4,928.
- amazon_counterfactual_en_k8, amazon_counterfactual_en_k64: k examples per class (counterfactual or not)
  sampled from EN_train.tsv with the run's seed; evaluated on the full EN_test.tsv (670 rows, 131 positive).
- cfpb_payday_2023: routing by `issue`; train = complaints received January to June 2023, test = July and
  August 2023; issues with fewer than 20 rows in the whole file are merged into "other". Same rows every seed.
- banking77_k8_10intents (the --quick subset): banking77_k8 restricted to the first 10 intents in sorted
  (code-point) order, Refund_not_showing_up to cancel_transfer, tested on those intents' test rows only
  (80 training rows, 400 test rows).

Methods (METHODS; each is fn(train, test, seed) -> MethodRun(predictions, train_seconds)):
- tfidf_lr: TF-IDF, then logistic regression (class_weight balanced, max_iter 2000), tuned as a careful user
  would: the n-grams (word 1-2 grams, char_wb 2-5 grams, or both side by side) and C (1, 10, 100) are chosen
  together by stratified cross-validation on the training rows only (5 folds, fewer when a label has fewer rows,
  at least 2; macro-F1; the vectorizers refitted inside each fold), then refitted on every training row. Ties go
  to the simpler features and the smaller C. Each row records the choice and its cross-validated macro-F1
  (`chosen`).
- embeddings_lr: the packaged MiniLM, frozen: mean pooling of the last hidden state over the attention mask,
  L2-normalised (as sentence-transformers' all-MiniLM-L6-v2), then the same logistic regression, its C chosen
  the same way.
- setfit: the `setfit` package on the packaged MiniLM with the paper's defaults (20 pair iterations per row,
  batch 16, one epoch, body learning rate 2e-5, logistic-regression head).
- plain_full_ft: a plain fine-tuning script (AutoModelForSequenceClassification, every weight, AdamW 5e-5,
  10 epochs); no nichetune code.
- nichetune_<strategy>, one per strategy: the pipeline's own code (tasks.finetune.finetune, then
  tasks.model.Classifier). The default strategy runs with params.yaml's finetune section exactly; the others
  with params.yaml plus their `benchmarked` settings in tasks.strategies; --finetune overrides apply to all of
  them, and need --out: the quality table is params.yaml's (settings tried go to e.g.
  benchmarks/results/settings_gpu.json, where rows of different overrides stand side by side).

Every method of a seed gets the same sampled training rows (`train_sha` in each result row shows it).
Train seconds: wall time to fit on the training rows from an already loaded backbone; it excludes loading
weights, saving the model and predicting the test set (for nichetune_*: FinetuneResult.seconds, which includes
computing the frozen layers' outputs; for the tuned baselines, the search on every core, and for embeddings_lr
embedding the training rows). A `+<objective>` row's domain adaptation comes before that, once per corpus: its
seconds are the row's `adapt_s` (absent when the adapted backbone came from the cache). A bar on the terminal
counts the rows done (none with NICHETUNE_QUIET or `nichetune --quiet`).

A nichetune_* run keeps a checkpoint after every epoch in --work-dir (default <base.workdir>/bench), a SetFit
run one every ten minutes: the same command run again after a kill (a closed laptop, a session's end) resumes
the seed from its last checkpoint, to the same result. Its train seconds add up the runs up to their last
checkpoints (the partial epoch lost at the kill is not counted) and its result row records `resumed_from_epoch`
(SetFit: `resumed_from_step`, in pair batches).

--quick checks the harness in about half a minute on 2 cores: banking77_k8_10intents, 1 seed, every method with one
epoch (SetFit: one pair iteration). The slice of banking77 in tests/data holds every row of those ten intents, so
`--quick --data tests/data` gives the same rows as the full dataset. Raw results are merged into
benchmarks/results/quality.json (quality_quick.json with --quick) unless --out names another file: a row of the same
dataset, method, seed and --finetune overrides is replaced, so the table can be filled one command at a time. Each
row is merged into the file as it is when the row is done, so a note added to it, or another bench's rows, during a
long run are kept; a markdown table is printed (methods run with overrides are shown with them)."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import matthews_corrcoef
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline
from tqdm import tqdm

from benchmarks.sources import DEFAULT_DATA, add_data_option, dataset_dir
from tasks.progress import bar
from tasks.strategies import STRATEGIES as STRATEGY_TABLE

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
METRICS = ("accuracy", "macro_f1", "mcc", "train_s")
DEFAULT_SEEDS = 5
QUICK_DATASETS = ["banking77_k8_10intents"]
QUICK_SEEDS = 1
OTHER_ISSUE = "other"
MIN_ISSUE_ROWS = 20


# ---------------------------------------------------------------- datasets: (train, test) with text, label


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame  # columns text, label
    test: pd.DataFrame
    # unlabeled texts for the methods that use them (`+self`, `+<objective>`): the published training split's
    # texts, labels dropped (never a test text). Like the split stage, `nichetune` drops a seed's labeled texts
    # from it; adapt.corpus pool+training adds them back for domain adaptation (all that cfpb's pool holds)
    pool: tuple[str, ...] = ()


def read_banking77(folder: Path) -> Split:
    """BANKING77 as published: train.csv and test.csv, `category` as the label."""
    frames = [pd.read_csv(folder / name) for name in ("train.csv", "test.csv")]
    return Split(*(frame.rename(columns={"category": "label"}) for frame in frames))


def read_amazon_counterfactual(folder: Path) -> Split:
    """Amazon counterfactual EN: `sentence` as text, `is_counterfactual` (0/1) as a named label."""
    names = {0: "not_counterfactual", 1: "counterfactual"}

    def read(name: str) -> pd.DataFrame:
        frame = pd.read_csv(folder / name, sep="\t", quoting=3)
        return pd.DataFrame({"text": frame["sentence"], "label": frame["is_counterfactual"].map(names)})

    return Split(read("EN_train.tsv"), read("EN_test.tsv"))


def sample_per_class(frame: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """k rows of each label (all of a label's rows when it has fewer), drawn with `seed`: the same rows for
    the same seed, every time; for one seed the k=8 rows are among the k=64 rows."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    sample = shuffled.groupby("label", sort=False).head(k).sort_values("label", kind="stable")
    return sample.reset_index(drop=True)


def few_shot(read: Callable[[Path], Split], k: int, folder: Path, seed: int, classes: int | None = None) -> Split:
    """k training rows per class sampled with `seed`, the full test set; `classes` keeps only the first
    that many labels in alphabetical order (train and test alike)."""
    split = read(folder)
    if classes is not None:
        keep = sorted(split.train["label"].unique())[:classes]
        split = Split(*(frame[frame["label"].isin(keep)] for frame in (split.train, split.test)))
    return Split(sample_per_class(split.train, k, seed), split.test.reset_index(drop=True),
                 tuple(split.train["text"].astype(str)))


def cfpb_split(folder: Path, seed: int = 0) -> Split:
    """CFPB complaints routed by issue: January-June 2023 train, July-August 2023 test; issues with fewer
    than MIN_ISSUE_ROWS rows in the whole file become OTHER_ISSUE. The seed does not change the rows."""
    frame = pd.read_csv(folder / "complaints.csv")
    counts = frame["issue"].value_counts()
    label = frame["issue"].where(frame["issue"].map(counts) >= MIN_ISSUE_ROWS, OTHER_ISSUE)
    rows = pd.DataFrame({"text": frame["text"], "label": label, "date_received": frame["date_received"]})
    month = rows["date_received"].str[:7]
    in_train = month.between("2023-01", "2023-06")
    in_test = month.between("2023-07", "2023-08")
    train = rows[in_train].reset_index(drop=True)
    return Split(train, rows[in_test].reset_index(drop=True), tuple(train["text"].astype(str)))


@dataclass(frozen=True)
class Dataset:
    folder: str  # its folder under --data, a key of sources.SOURCES
    split: Callable[[Path, int], Split]  # (that folder, seed) -> Split


DATASETS: dict[str, Dataset] = {
    "banking77_k8": Dataset("banking77", functools.partial(few_shot, read_banking77, 8)),
    "banking77_k64": Dataset("banking77", functools.partial(few_shot, read_banking77, 64)),
    "amazon_counterfactual_en_k8": Dataset("amazon_counterfactual_en",
                                           functools.partial(few_shot, read_amazon_counterfactual, 8)),
    "amazon_counterfactual_en_k64": Dataset("amazon_counterfactual_en",
                                            functools.partial(few_shot, read_amazon_counterfactual, 64)),
    "cfpb_payday_2023": Dataset("cfpb_payday_2023", cfpb_split),
    "banking77_k8_10intents": Dataset("banking77", functools.partial(few_shot, read_banking77, 8, classes=10)),
}


FULL_DATASETS = [name for name in DATASETS if name not in QUICK_DATASETS]


def load_split(name: str, seed: int, data: Path = DEFAULT_DATA) -> Split:
    """The training and test rows of dataset `name` for `seed`, read from its folder under `data`."""
    dataset = DATASETS[name]
    return dataset.split(dataset_dir(data, dataset.folder), seed=seed)


# ---------------------------------------------------------------- methods: fit on train, predict test


@dataclass(frozen=True)
class MethodRun:
    predictions: list[str]  # one label per test row
    train_seconds: float  # fitting only: see the module docstring
    resumed_from_epoch: int | None = None  # nichetune_*: the checkpoint a killed run of this seed left
    resumed_from_step: int | None = None  # setfit: the same, counted in pair batches
    chosen: dict | None = None  # tuned baselines: the settings cross-validation chose and their CV macro-F1
    kept: dict | None = None  # nichetune_auto: the candidates' weights, and those finetune.time_budget left out
    pseudo_labels: list[int] | None = None  # +self: the pseudo-labels each round of self-training added
    adapt_seconds: float | None = None  # +<objective>: the domain adaptation before training (not in train_seconds)


Method = Callable[[pd.DataFrame, pd.DataFrame, int], MethodRun]


# ---------------------------------------------------------------- tuned baselines: settings chosen on training rows

C_GRID = (1.0, 10.0, 100.0)  # inverse regularisation tried, scikit-learn's default and weaker: few rows want weak
MAX_FOLDS = 5  # cross-validation folds at most; fewer when a label has fewer rows
# TF-IDF inputs tried: word unigrams and bigrams, character 2-5 grams inside word boundaries (robust to typos
# and inflections), or both side by side
NGRAMS = {"word": {"analyzer": "word", "ngram_range": (1, 2)}, "char": {"analyzer": "char_wb", "ngram_range": (2, 5)}}
NGRAM_CHOICES = (("word",), ("char",), ("word", "char"))


@dataclass(frozen=True)
class Tuned:
    model: object  # a scikit-learn estimator refitted on every training row with the chosen settings
    settings: dict  # e.g. {"ngrams": "word+char", "C": 10.0, "cv_macro_f1": {"word+char C=10": 0.83, ...}}


def cv_folds(labels: list[str], seed: int) -> StratifiedKFold:
    """Stratified folds, shuffled with `seed`: MAX_FOLDS, fewer when the smallest label has fewer rows, at least 2."""
    smallest = int(pd.Series(labels).value_counts().min())
    return StratifiedKFold(n_splits=max(2, min(MAX_FOLDS, smallest)), shuffle=True, random_state=seed)


def logistic_regression(seed: int, C: float = 1.0) -> LogisticRegression:
    """The classifier both baselines put on top of their features."""
    return LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)


def tfidf_features(parts: tuple[str, ...]) -> FeatureUnion:
    """TF-IDF of the NGRAMS `parts` side by side, each named after its part."""
    return FeatureUnion([(part, TfidfVectorizer(**NGRAMS[part])) for part in parts])


def grid_search(model, grid: dict, inputs, labels: list[str], seed: int) -> Tuned:
    """Every setting of `grid` scored by macro-F1 over cv_folds (every core at once), the best refitted on all
    rows; ties go to the first setting in grid order (the simplest features, the strongest regularisation)."""
    search = GridSearchCV(model, grid, scoring="f1_macro", cv=cv_folds(labels, seed), n_jobs=-1, refit=True)
    search.fit(inputs, labels)
    results = search.cv_results_
    scores = {setting_name(search_settings(params)): float(score)
              for params, score in zip(results["params"], results["mean_test_score"])}
    return Tuned(search.best_estimator_, {**search_settings(search.best_params_), "cv_macro_f1": scores})


def search_settings(params: dict) -> dict:
    """A grid point as it is reported: {"ngrams": "word+char", "C": 10.0} ("ngrams" for TF-IDF only)."""
    union = params.get("features")
    ngrams = {"ngrams": "+".join(part for part, _ in union.transformer_list)} if union is not None else {}
    return {**ngrams, "C": float(params.get("model__C", params.get("C")))}


def setting_name(settings: dict) -> str:
    """`word+char C=10`, or `C=10` without n-grams."""
    return " ".join(filter(None, [settings.get("ngrams"), f"C={settings['C']:g}"]))


def tune_tfidf_lr(texts: list[str], labels: list[str], seed: int) -> Tuned:
    """TF-IDF + logistic regression, its n-grams (NGRAM_CHOICES) and C (C_GRID) chosen by cross-validation on
    these rows; the vectorizers are refitted inside each fold, so no fold's held-out words leak into its IDF."""
    pipeline = Pipeline([("features", tfidf_features(NGRAM_CHOICES[0])), ("model", logistic_regression(seed))])
    grid = {"features": [tfidf_features(parts) for parts in NGRAM_CHOICES], "model__C": list(C_GRID)}
    return grid_search(pipeline, grid, texts, labels, seed)


def tune_embedding_lr(vectors: np.ndarray, labels: list[str], seed: int) -> Tuned:
    """Logistic regression on sentence vectors, C (C_GRID) chosen by cross-validation on these rows."""
    return grid_search(logistic_regression(seed), {"C": list(C_GRID)}, vectors, labels, seed)


def chosen_settings(tuned: Tuned) -> dict:
    """What a result row records of a tuned baseline: its settings and their cross-validated macro-F1."""
    settings = {key: value for key, value in tuned.settings.items() if key != "cv_macro_f1"}
    return {**settings, "cv_macro_f1": tuned.settings["cv_macro_f1"][setting_name(settings)]}


def tfidf_lr(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> MethodRun:
    """TF-IDF + logistic regression tuned on the training rows (tune_tfidf_lr); the search is training time."""
    started = time.perf_counter()
    tuned = tune_tfidf_lr(train["text"].tolist(), train["label"].tolist(), seed)
    seconds = time.perf_counter() - started
    return MethodRun(tuned.model.predict(test["text"].tolist()).tolist(), seconds, chosen=chosen_settings(tuned))


@functools.lru_cache(maxsize=1)
def sentence_encoder():
    """The packaged MiniLM backbone (no head) and its tokenizer, loaded once per process and warmed up with
    one forward pass, so that the first seed's train time does not carry torch's one-off start-up cost."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tasks.model import backbone_path, resolve_device

    device = resolve_device("auto")
    path = backbone_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device.device).eval()
    with torch.inference_mode():
        model(**tokenizer(["warm up"] * 2, return_tensors="pt").to(device.device))
    return tokenizer, model, device


def embed(texts: list[str], batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """Sentence embeddings from the frozen backbone as sentence-transformers' all-MiniLM-L6-v2 makes them: the
    pipeline's batched inference and mean pooling, L2-normalised; 256 tokens is that model's max_seq_length."""
    import torch

    from tasks.inference import length_batches, mean_pool

    tokenizer, model, device = sentence_encoder()
    vectors = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for index, batch in length_batches(tokenizer, texts, batch_size, max_length, device.device):
            pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
            vectors[index] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy()
    return vectors


def embeddings_lr(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> MethodRun:
    """Frozen MiniLM sentence embeddings, then logistic regression tuned on them (tune_embedding_lr); embedding
    the training rows and the search are training time."""
    sentence_encoder()  # loading the weights is not training time
    started = time.perf_counter()
    tuned = tune_embedding_lr(embed(train["text"].tolist()), train["label"].tolist(), seed)
    seconds = time.perf_counter() - started
    predictions = tuned.model.predict(embed(test["text"].tolist())).tolist()
    return MethodRun(predictions, seconds, chosen=chosen_settings(tuned))


def nichetune(train: pd.DataFrame, test: pd.DataFrame, seed: int, params=None,
              work_dir: Path | None = None, pool: tuple[str, ...] = (), unlabeled: dict | None = None) -> MethodRun:
    """The pipeline's own fine-tune stage (tasks.finetune.finetune) and its Classifier, with `params`.
    Its per-epoch checkpoints go to `work_dir` (default bench_workdir()), so that the same command run again
    after a kill resumes the seed (train seconds then add up the runs); the frozen-feature cache is off, so
    every seed computes them as a first run does."""
    from tasks.finetune import Unlabeled, finetune
    from tasks.model import forget_bases
    from tasks.portfolio import load_classifier

    params = params.model_copy(update={"cache_features": False})
    own = set(train["text"])  # the split stage drops labeled texts from the pool; so does the bench
    texts = [text for text in pool if text not in own]
    with tempfile.TemporaryDirectory(prefix="quality-nichetune-") as folder:
        result = finetune(train[["text", "label"]], params, seed, Path(folder), work_dir or bench_workdir(),
                          Unlabeled(texts, **unlabeled) if unlabeled else None)
        predictions = load_classifier(result.model_dir).predict(test["text"].tolist())
    forget_bases()
    kept = None
    if result.choice:
        kept = {"weights": result.choice["weights"],
                "left_out": [c["name"] for c in result.candidates if "left_out" in c]}
    rounds, adapted = result.unlabeled.get("self_training"), result.unlabeled.get("adapt")
    return MethodRun(predictions, result.seconds, result.resumed_from_epoch, kept=kept,
                     pseudo_labels=rounds["pseudo_labels"] if rounds else None,
                     adapt_seconds=adapted["seconds"] if adapted and not adapted["cached"] else None)


def setfit(train: pd.DataFrame, test: pd.DataFrame, seed: int, num_iterations: int = 20,
           work_dir: Path | None = None) -> MethodRun:
    """SetFit (the `setfit` package) on the packaged MiniLM with the paper's defaults: 20 contrastive pair
    iterations per row, batch 16, one epoch, body learning rate 2e-5, logistic-regression head. It keeps a
    checkpoint every ten minutes under `work_dir` (default bench_workdir()), from which the same command resumes
    the seed after a kill (benchmarks/setfit_baseline.py)."""
    from benchmarks.setfit_baseline import train_setfit

    folder = (work_dir or bench_workdir()) / "setfit" / f"{fingerprint(train)}-seed{seed}-iterations{num_iterations}"
    run = train_setfit(train, test, seed, num_iterations, folder)
    return MethodRun(run.predictions, run.seconds, resumed_from_step=run.resumed_from_step)


def plain_full_finetuning(train: pd.DataFrame, test: pd.DataFrame, seed: int, epochs: int = 10) -> MethodRun:
    """What a plain fine-tuning script does: AutoModelForSequenceClassification (BERT's [CLS] pooler and a new
    head), every weight trained, AdamW 5e-5, weight decay 0.01, 10% linear warmup then decay, batch 16,
    `epochs` epochs, 128 tokens padded per batch, on the GPU when there is one (fp32). No nichetune code."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from tasks.model import backbone_path

    torch.manual_seed(seed)
    labels = sorted(train["label"].unique())
    path = backbone_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels), dtype=torch.float32)
    model.to(device)
    texts, targets = train["text"].tolist(), torch.tensor([labels.index(v) for v in train["label"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    steps = epochs * -(-len(texts) // 16)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(texts), generator=generator).split(16):
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=128,
                              return_tensors="pt").to(device)
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, targets[index].to(device))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.eval()
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(test), 64):
            batch = tokenizer(test["text"].iloc[start : start + 64].tolist(), padding=True, truncation=True,
                              max_length=128, return_tensors="pt").to(device)
            predictions += [labels[i] for i in model(**batch).logits.argmax(dim=1).tolist()]
    return MethodRun(predictions, seconds)


# Settings each non-default strategy is benchmarked with, on top of params.yaml's finetune section (the
# default strategy runs with params.yaml exactly): each entry's `benchmarked` in the strategy table.
STRATEGY_SETTINGS = {name: entry.benchmarked for name, entry in STRATEGY_TABLE.items()}


def project_params() -> dict:
    """The project's params.yaml."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def project_finetune() -> dict:
    """The finetune section of the project's params.yaml: what a user gets by default."""
    return project_params()["finetune"]


def tuned_strategy() -> str:
    """The strategy whose network the default trains: params.yaml's strategy, or auto's fine-tuned candidate. The
    benchmarks of the training loop (gpu, memory, cores, growth, runtime) time this one, as a fine-tuned network is
    what costs time, memory and cores; the fast learners beside it fit in seconds."""
    from tasks.config import FinetuneParams

    return FinetuneParams(**project_finetune()).tuned_strategy


def bench_workdir() -> Path:
    """Where nichetune_* and setfit runs keep their checkpoints: `bench/` in the project's base.workdir (git-ignored)."""
    return REPO / project_params()["base"]["workdir"] / "bench"


def strategy_params(strategy: str, overrides: dict | None = None):
    """FinetuneParams for benchmarking `strategy`: params.yaml's, plus STRATEGY_SETTINGS unless it is the
    default strategy, plus `overrides`."""
    from tasks.config import FinetuneParams

    base = project_finetune()
    extra = {} if base["strategy"] == strategy else STRATEGY_SETTINGS[strategy]
    return FinetuneParams(**{**base, "strategy": strategy, **extra, **(overrides or {})})


STRATEGIES = list(STRATEGY_SETTINGS)
METHODS: dict[str, Method] = {
    "tfidf_lr": tfidf_lr,
    "embeddings_lr": embeddings_lr,
    "setfit": setfit,
    "plain_full_ft": plain_full_finetuning,
    **{f"nichetune_{strategy}": functools.partial(nichetune, params=None) for strategy in STRATEGIES},
}
BASELINES = ["tfidf_lr", "embeddings_lr", "setfit", "plain_full_ft"]
QUICK_OVERRIDES = {"finetune": {"epochs": 1}, "setfit": {"num_iterations": 1}, "plain_full_ft": {"epochs": 1}}


# the rounds a `+self` row trains where params.yaml leaves self-training off: on amazon with 8 per class a second
# round, which may add twice the first's pseudo-labels, gained more than the first, and a third gained within noise
# for nearly twice the rows (BENCHMARKS.md, self-training's threshold and rounds)
SELF_ROUNDS = 2


def unlabeled_settings(uses: list[str]) -> dict | None:
    """What a method name's `+` parts ask of the unlabeled texts: `+self` self-training with params.yaml's
    self_training section (SELF_ROUNDS rounds where it leaves self-training off), `+mlm`, `+tsdae`, `+simcse`
    domain adaptation with its adapt section and that objective. None: the method does not use them."""
    from tasks.config import AdaptParams, SelfTrainingParams

    if not uses:
        return None
    unknown = [use for use in uses if use not in ("self", "mlm", "tsdae", "simcse")]
    if unknown:
        raise ValueError(f"method part(s) {', '.join('+' + u for u in unknown)}: use +self, +mlm, +tsdae or +simcse")
    settings = project_params()
    objective = next((use for use in uses if use != "self"), "none")
    adapt = AdaptParams(**{**settings.get("adapt", {}), "objective": objective})
    rounds = settings.get("self_training", {})
    wanted = (rounds.get("rounds") or SELF_ROUNDS) if "self" in uses else 0
    self_training = SelfTrainingParams(**{**rounds, "rounds": wanted})
    return {"adapt": adapt, "self_training": self_training}


def default_method() -> str:
    """The method that is nichetune's default: the strategy params.yaml names."""
    return f"nichetune_{project_finetune()['strategy']}"


def select_methods(names: list[str], finetune_overrides: dict | None = None, quick: bool = False,
                   work_dir: Path | None = None) -> dict[str, Method]:
    """The named methods; nichetune strategies get strategy_params(strategy, finetune_overrides), they and
    SetFit keep their checkpoints in `work_dir`, and with `quick` every trained method gets its QUICK_OVERRIDES (a harness
    check, not a measurement)."""
    chosen = {}
    for name in names:
        if name.startswith("nichetune_"):
            overrides = {**(QUICK_OVERRIDES["finetune"] if quick else {}), **(finetune_overrides or {})}
            strategy, *uses = name.removeprefix("nichetune_").split("+")
            chosen[name] = functools.partial(nichetune, params=strategy_params(strategy, overrides),
                                             work_dir=work_dir, unlabeled=unlabeled_settings(uses))
        elif name == "setfit":
            chosen[name] = functools.partial(setfit, work_dir=work_dir, **(QUICK_OVERRIDES[name] if quick else {}))
        elif quick and name in QUICK_OVERRIDES:
            chosen[name] = functools.partial(METHODS[name], **QUICK_OVERRIDES[name])
        else:
            chosen[name] = METHODS[name]
    return chosen


# ---------------------------------------------------------------- harness


def metrics(truth: list[str], predicted: list[str], majority: str) -> dict:
    """Accuracy and macro-F1 as the pipeline's evaluate stage scores them, plus Matthews correlation."""
    from tasks.evaluate import score

    scored, _ = score(truth, predicted, majority)
    return {"accuracy": scored["accuracy"], "macro_f1": scored["macro_f1"],
            "mcc": float(matthews_corrcoef(truth, predicted)), "majority_accuracy": scored["majority_accuracy"]}


def fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of the rows' texts and labels, in order: equal hashes mean the same training rows."""
    text = "\n".join(f"{label}\t{text}" for text, label in zip(frame["text"], frame["label"]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_one(dataset: str, method: str, fn: Method, split: Split, seed: int) -> dict:
    """Fit one method on one dataset and seed; one result row. A method that learns from unlabeled texts (its
    name has a `+`) gets the split's pool."""
    run = fn(split.train.copy(), split.test.copy(), seed, **({"pool": split.pool} if "+" in method else {}))
    majority = split.train["label"].value_counts().idxmax()
    return {"dataset": dataset, "method": method, "seed": seed,
            **metrics(split.test["label"].tolist(), run.predictions, majority),
            "train_s": run.train_seconds, "train_rows": len(split.train), "test_rows": len(split.test),
            "classes": split.train["label"].nunique(), "train_sha": fingerprint(split.train),
            **({"chosen": run.chosen} if run.chosen is not None else {}),
            **({"kept": run.kept} if run.kept is not None else {}),
            **({"pseudo_labels": run.pseudo_labels} if run.pseudo_labels is not None else {}),
            **({"adapt_s": run.adapt_seconds} if run.adapt_seconds is not None else {}),
            **({"resumed_from_epoch": run.resumed_from_epoch} if run.resumed_from_epoch is not None else {}),
            **({"resumed_from_step": run.resumed_from_step} if run.resumed_from_step is not None else {})}


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (None for one seed) per dataset x method, datasets and methods in the
    order of DATASETS and METHODS; for train seconds also the median, the figure to quote from a shared machine."""
    frame = pd.DataFrame(rows)
    rank = {name: position for position, name in enumerate([*DATASETS, *METHODS])}  # unknown names last
    # a method that learns from unlabeled texts (nichetune_auto+self) comes right after its labeled-only self
    place = lambda name: (rank.get(name.split("+")[0], len(rank)), "+" in name)  # noqa: E731
    groups = sorted(frame.groupby(["dataset", "method"], sort=False),
                    key=lambda group: [place(name) for name in group[0]])
    summary = []
    for (dataset, method), group in groups:
        entry = {"dataset": dataset, "method": method, "seeds": len(group)}
        for key in METRICS:
            entry[f"{key}_mean"] = float(group[key].mean())
            entry[f"{key}_std"] = float(group[key].std(ddof=1)) if len(group) > 1 else None
        entry["train_s_median"] = float(group["train_s"].median())
        summary.append(entry)
    return summary


def machine() -> dict:
    """Where the numbers come from: architecture, cores, accelerator, the CPU's name and bf16 unit
    (tasks.model.cpu_bf16_unit), library versions, and the 1-minute load average at the start (above the core count means other work shared the CPU and train times are high)."""
    import sklearn
    import torch
    import transformers

    from tasks.model import cpu_bf16_unit

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"arch": platform.machine(), "cores": len(os.sched_getaffinity(0)), "gpu": gpu, "cpu": cpu_name(),
            "cpu_bf16": cpu_bf16_unit(),
            "load_average_1min": os.getloadavg()[0],
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "sklearn": sklearn.__version__}


def cpu_name() -> str | None:
    """The CPU's model name as the kernel reports it (a VM may report only the vendor); None where it does not."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


BF16_UNITS = {"amx": "AMX", "avx512_bf16": "AVX-512 BF16"}  # tasks.model.cpu_bf16_unit's answers, as written


def cpu_kind() -> str:
    """The CPU as its speed depends on it: its name and the unit that runs its bf16 products, if any."""
    from tasks.model import cpu_bf16_unit

    return f"{cpu_name() or 'CPU'} ({BF16_UNITS.get(cpu_bf16_unit(), 'no bf16 unit')})"


def run_benchmark(datasets: list[str], methods: dict[str, Method], seeds: int, out: Path | None = None,
                  command: str | None = None, settings: dict | None = None, from_seed: int = 0,
                  data: Path = DEFAULT_DATA) -> dict:
    """Every dataset x seed x method. With `out`, each row is merged into the file as it is at that moment (a
    row of the same dataset, method and seed is replaced), so that tables can be filled one command at a time and
    what was written to the file during a long run (a note, another run's rows) is kept. `settings` (e.g.
    fine-tune overrides) is recorded as given. The datasets are read from `data`."""
    results = read_results(out) if out is not None and out.is_file() else {"runs": [], "rows": []}
    run = {"command": command, "date": time.strftime("%Y-%m-%d"), "started": datetime.now(timezone.utc).isoformat(),
           "machine": machine(), "datasets": datasets, "methods": list(methods), "seeds": seeds,
           "first_seed": from_seed, "settings": settings or {}}
    with bar(len(datasets) * (seeds - from_seed) * len(methods), "bench quality", "row") as progress:
        for dataset in datasets:
            for seed in range(from_seed, seeds):
                split = load_split(dataset, seed, data)  # one sample per seed, shared by every method
                for name, fn in methods.items():
                    progress.set_description(f"{dataset} seed {seed} {name}")
                    row = run_one(dataset, name, fn, split, seed)
                    if out is not None and out.is_file():
                        results = read_results(out)
                    results = with_row(results, run, row)
                    if out is not None:
                        write_results(results, out)
                    progress.update()
                    tqdm.write(row_line(row), file=sys.stderr)  # above the bar, which stays at the bottom
    return results


def row_line(row: dict) -> str:
    """One measured row as the bench prints it when it is done."""
    return (f"{row['dataset']} {row['method']} seed {row['seed']}: accuracy {row['accuracy']:.3f}, macro-F1 "
            f"{row['macro_f1']:.3f}, MCC {row['mcc']:.3f}, train {row['train_s']:.1f} s")


def with_row(results: dict, run: dict, row: dict) -> dict:
    """`results` with `run` in its run list (found by its start time, else appended) and `row`, measured by that
    run, in place of the row it replaces."""
    index = next((i for i, known in enumerate(results["runs"]) if known.get("started") == run["started"]), None)
    if index is None:
        results["runs"].append(run)
        index = len(results["runs"]) - 1
    row = {**row, "run": index}
    results["rows"] = [r for r in results["rows"] if row_key(results, r) != row_key(results, row)] + [row]
    results["aggregate"] = aggregate(results["rows"])
    return results


def run_overrides(results: dict, row: dict) -> dict:
    """The --finetune overrides of the run that measured `row` ({} for none, or for a row without a run)."""
    run = results["runs"][row["run"]] if "run" in row else {}
    return (run.get("settings") or {}).get("finetune_overrides") or {}


def row_key(results: dict, row: dict) -> tuple:
    """What a new row replaces: the same dataset, method and seed run with the same fine-tune overrides."""
    return row["dataset"], row["method"], row["seed"], json.dumps(run_overrides(results, row), sort_keys=True)


def read_results(path: Path) -> dict:
    """A results file; files from before runs were merged (one run, no `runs` list) are read as one run."""
    results = json.loads(path.read_text())
    if "runs" not in results:
        run = {key: results.get(key) for key in ("command", "date", "machine", "datasets", "methods", "seeds",
                                                 "settings")}
        results = {"runs": [run], "rows": [{**row, "run": 0} for row in results["rows"]]}
    return results


def write_results(results: dict, out: Path) -> None:
    """The raw results as indented JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(out)  # atomic: another bench reading the file, or a killed one, never sees half of it


PRIMARY_METRIC = {"amazon_counterfactual_en_k8": "mcc", "amazon_counterfactual_en_k64": "mcc"}  # else accuracy


def goal_lines(results: dict, default: str, baselines: list[str] = BASELINES) -> list[dict]:
    """Per dataset: does the default method's mean primary metric reach every measured baseline's? (holds is
    None where the default itself was not measured.)"""
    means = {(e["dataset"], e["method"]): e for e in aggregate(results["rows"])}
    lines = []
    for dataset in dict.fromkeys(e["dataset"] for e in means.values()):
        metric = PRIMARY_METRIC.get(dataset, "accuracy")
        ours = means.get((dataset, default))
        measured = [b for b in baselines if (dataset, b) in means]
        missing = [b for b in baselines if (dataset, b) not in means]
        if not measured:
            continue
        if ours is None:
            lines.append({"dataset": dataset, "metric": metric, "default": None, "holds": None,
                          "measured": measured})
            continue
        beaten_by = [b for b in measured if means[(dataset, b)][f"{metric}_mean"] > ours[f"{metric}_mean"]]
        lines.append({"dataset": dataset, "metric": metric, "default": ours[f"{metric}_mean"],
                      "seeds": ours["seeds"],
                      "best_baseline": max(measured, key=lambda b: means[(dataset, b)][f"{metric}_mean"]),
                      "beaten_by": beaten_by, "not_measured": missing, "holds": not beaten_by})
    return lines


def labelled_rows(results: dict) -> list[dict]:
    """The rows, each method named with its run's fine-tune overrides when it had any ("nichetune_full
    (max_length=512)"), so that different settings are summarised apart."""
    def label(row: dict) -> dict:
        shown = " ".join(f"{key}={value}" for key, value in run_overrides(results, row).items())
        return {**row, "method": f"{row['method']} ({shown})"} if shown else row

    return [label(row) for row in results["rows"]] if "runs" in results else results["rows"]


def markdown_table(results: dict) -> str:
    """One row per dataset x method: mean ± std over seeds of accuracy, macro-F1 and MCC (x100); the median
    train seconds over seeds (single seeds can be slowed by other work on a shared machine)."""
    def cell(entry: dict, key: str, scale: float, digits: int) -> str:
        mean, std = entry[f"{key}_mean"] * scale, entry[f"{key}_std"]
        return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std * scale:.{digits}f}"

    lines = ["| dataset | method | seeds | accuracy % | macro-F1 % | MCC x100 | train s (median) |",
             "|---|---|---|---|---|---|---|"]
    for entry in aggregate(labelled_rows(results)):
        lines.append(f"| {entry['dataset']} | {entry['method']} | {entry['seeds']} | "
                     f"{cell(entry, 'accuracy', 100, 1)} | {cell(entry, 'macro_f1', 100, 1)} | "
                     f"{cell(entry, 'mcc', 100, 1)} | {entry['train_s_median']:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_overrides(items: list[str]) -> dict:
    """KEY=VALUE pairs for FinetuneParams, values read as YAML (epochs=2, learning_rate=5e-4)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--finetune {item!r}: expected KEY=VALUE, for example epochs=3")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def method_name(name: str) -> str:
    """A known method, or a nichetune_* method with `+` parts that unlabeled_settings understands."""
    base, *uses = name.split("+")
    if base not in METHODS or (uses and not base.startswith("nichetune_")):
        raise argparse.ArgumentTypeError(f"{name!r}: not a method; methods are {', '.join(METHODS)}")
    try:
        unlabeled_settings(uses)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; None for --datasets and --seeds means the defaults of the mode (full or quick)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="harness check: banking77 k=8 on 10 intents, 1 seed, every method with one epoch")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=None)
    parser.add_argument("--methods", nargs="+", type=method_name, default=list(METHODS),
                        help=f"among {', '.join(METHODS)}; a nichetune_* method may add +self (self-training) and "
                             "one of +mlm, +tsdae, +simcse (domain adaptation) to learn from the unlabeled texts")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds 0..N-1 (default {DEFAULT_SEEDS}; {QUICK_SEEDS} with --quick)")
    parser.add_argument("--from-seed", type=int, default=0, metavar="K",
                        help="run seeds K..N-1 only: extends rows already measured for seeds 0..K-1")
    parser.add_argument("--finetune", nargs="+", default=[], metavar="KEY=VALUE",
                        help="FinetuneParams overrides for every nichetune_<strategy> method")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="checkpoints of nichetune_* and setfit runs, from which a killed run resumes "
                             "(default <base.workdir>/bench)")
    parser.add_argument("--note", default=None, help="how this run differs from a plain install, for the report")
    add_data_option(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """`python -m benchmarks.quality`: run, write the JSON, print the markdown table."""
    from tasks.runtime import quiet_offline_defaults

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    quiet_offline_defaults()
    datasets = args.datasets or (QUICK_DATASETS if args.quick else FULL_DATASETS)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    overrides = parse_overrides(args.finetune)
    if overrides and args.out is None and not args.quick:
        raise SystemExit("--finetune changes what params.yaml trains: write those rows elsewhere with --out FILE "
                         "(e.g. benchmarks/results/settings_gpu.json); the quality table is params.yaml's")
    out = args.out or RESULTS / ("quality_quick.json" if args.quick else "quality.json")
    command = " ".join(["nichetune bench quality", *argv])
    methods = select_methods(args.methods, overrides, quick=args.quick, work_dir=args.work_dir)
    if not 0 <= args.from_seed < seeds:
        raise SystemExit(f"--from-seed {args.from_seed}: expected 0 to {seeds - 1} (it runs seeds K..N-1 of --seeds N)")
    for name in datasets:  # every folder before the first seed, not hours into the run
        dataset_dir(args.data, DATASETS[name].folder)
    results = run_benchmark(datasets, methods, seeds, out, command, from_seed=args.from_seed, data=args.data,
                            settings={"finetune_overrides": overrides, "params_finetune": project_finetune(),
                                      "quick": args.quick,
                                      **({"note": args.note} if args.note else {})})
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
