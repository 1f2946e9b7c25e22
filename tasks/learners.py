"""The fast learners of the `auto` strategy: logistic regression on TF-IDF word and character n-grams, and on the
backbone's frozen sentence vectors. Each chooses its regularisation by stratified cross-validation on the rows it
is given, as a careful user tunes a scikit-learn baseline.

A learner is saved as JSON and NumPy arrays, never as a pickle: loading a model folder runs no code from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LEARNER_FILE = "learner.json"
ARRAYS_FILE = "learner.npz"
C_GRID = (1.0, 10.0, 100.0)  # TF-IDF and unit-length sentence vectors both want weak regularisation at few rows
MAX_FOLDS = 5
# The cross-validation's folds in worker processes (joblib's), as many as this process's share of the cores: a
# logistic regression fit holds the GIL and keeps about one core busy. Every fit computes with one BLAS thread:
# lbfgs's many small products ran 5x slower on two OpenBLAS threads than on one (BENCHMARKS.md, "Training speed
# on the CPU")
CV_WORKERS = True
BLAS_THREADS = 1  # None: the library's own count
# seconds the idle worker processes (about 200 MB each) wait for the next search: auto's two searches, seconds apart,
# share them, and they do not hold memory through the fine-tuned candidate's training (joblib's default: 5 minutes)
CV_WORKERS_IDLE_S = 30

# TF-IDF reads words and word pairs, and characters inside word boundaries (robust to typos and inflection in short
# messages), side by side. Choosing one of the two or both per dataset by cross-validation took twice as long and
# scored lower on four of five datasets' dev rows: on a few hundred rows the choice follows noise (BENCHMARKS.md,
# "How auto's TF-IDF learner reads texts")
NGRAMS = ({"analyzer": "word", "ngram_range": (1, 2)}, {"analyzer": "char_wb", "ngram_range": (2, 5)})
TFIDF_SETTINGS = {"sublinear_tf": True, "lowercase": True, "dtype": np.float32}


@dataclass
class Linear:
    """Multinomial logistic regression weights over `labels` (binary: one row, as scikit-learn keeps it)."""

    labels: list[str]
    coef: np.ndarray
    intercept: np.ndarray

    def proba(self, features) -> np.ndarray:
        scores = np.asarray(features @ self.coef.T, dtype=np.float64) + self.intercept
        if self.coef.shape[0] == 1:
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return weights / weights.sum(axis=1, keepdims=True)


@dataclass
class Learner:
    """A fitted learner: its kind, chosen settings and weights, and (TF-IDF) the fitted vectorizers."""

    kind: str  # "tfidf" | "embedding"
    settings: dict  # C, and the cross-validated score of each C tried
    linear: Linear
    vectorizers: list = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return self.linear.labels

    def features(self, texts: list[str] | None = None, vectors: np.ndarray | None = None):
        if self.kind == "embedding":
            return vectors
        from scipy.sparse import hstack

        return hstack([vectorizer.transform(texts) for vectorizer in self.vectorizers]).tocsr()

    def predict_proba(self, texts: list[str] | None = None, vectors: np.ndarray | None = None) -> np.ndarray:
        """Probabilities over `labels`: from `texts` (TF-IDF) or their sentence `vectors` (embedding)."""
        return self.linear.proba(self.features(texts, vectors))


def _folds(labels: list[str], seed: int):
    """Stratified folds, as many as the smallest label allows (at most MAX_FOLDS); None: a label has one row."""
    from sklearn.model_selection import StratifiedKFold

    smallest = min(np.unique(labels, return_counts=True)[1])
    if smallest < 2:
        return None
    return StratifiedKFold(n_splits=min(MAX_FOLDS, int(smallest)), shuffle=True, random_state=seed)


def solver_for(features) -> str:
    """newton-cg on TF-IDF's sparse n-grams: on banking77 and cfpb it came 2.5 to 14 times closer to the exact
    optimum's probabilities than lbfgs at C 1 and 10, in a third to a half of lbfgs's time, and all of a search's
    fits took half the time (BENCHMARKS.md, "The fast learners' solver"). lbfgs on dense sentence vectors, where
    newton-cg took 2.4 times as long."""
    from scipy.sparse import issparse

    return "newton-cg" if issparse(features) else "lbfgs"


def _logistic(C: float, solver: str):
    """Classes weighed by their inverse frequency, as the bench's tuned baselines weigh them: on imbalanced labels
    (cfpb's complaint issues run from 547 rows to 16) small classes are not drowned out; on balanced labels the
    weights are all 1 (inside cross-validation folds that split a label unevenly, nearly 1)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", max_iter=3000, solver=solver)


def _fit_linear(features, labels: list[str], C: float) -> Linear:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        model = _logistic(C, solver_for(features)).fit(features, labels)
    return Linear([str(c) for c in model.classes_], model.coef_.astype(np.float32),
                  model.intercept_.astype(np.float64))


def _cv_scores(features, labels: np.ndarray, folds) -> dict[float, float]:
    """Mean macro-F1 over the folds of each C in C_GRID; `features(fold, train_index, test_index)` returns the
    fold's two feature matrices, built once for the whole grid. With CV_WORKERS the folds run side by side in
    worker processes, as many as this process's share of the cores (tasks.cores)."""
    import multiprocessing

    from joblib import Parallel, delayed
    from sklearn.metrics import f1_score

    from tasks import cores

    def fold_scores(fold: int, train_index: np.ndarray, test_index: np.ndarray) -> list[float]:
        from threadpoolctl import threadpool_limits

        train_x, test_x = features(fold, train_index, test_index)
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            return [f1_score(labels[test_index],
                             _logistic(C, solver_for(train_x)).fit(train_x, labels[train_index]).predict(test_x),
                             average="macro") for C in C_GRID]

    blas_threads = BLAS_THREADS  # read here: a worker process imports this module afresh
    splits = list(folds.split(np.zeros(len(labels)), labels))
    # a daemonic process (a Dask worker of `nichetune trials`) may not start children: there one after the other
    parallel = CV_WORKERS and not multiprocessing.current_process().daemon
    jobs = min(cores.share(), len(splits)) if parallel else 1
    per_fold = Parallel(n_jobs=jobs, prefer="processes", idle_worker_timeout=CV_WORKERS_IDLE_S)(
        delayed(fold_scores)(fold, train_index, test_index) for fold, (train_index, test_index) in enumerate(splits))
    return {C: float(np.mean([scores[i] for scores in per_fold])) for i, C in enumerate(C_GRID)}


def _choose_c(features, labels: list[str], seed: int) -> dict:
    """The learner's settings: the C of C_GRID with the best cross-validated macro-F1 (`features` as
    `_cv_scores` takes them; 10 where a label has a single row), and each C's score."""
    folds = _folds(labels, seed)
    tried = ({f"C={C:g}": value for C, value in _cv_scores(features, np.asarray(labels), folds).items()}
             if folds is not None else {})
    return {"C": float(max(tried, key=tried.get).removeprefix("C=")) if tried else 10.0, "cv_macro_f1": tried}


def _vectorizers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return [TfidfVectorizer(**TFIDF_SETTINGS, **options) for options in NGRAMS]


def _tfidf_features(fit_texts: list[str], other_texts: list[str]):
    from scipy.sparse import hstack

    vectorizers = _vectorizers()
    fitted = hstack([v.fit_transform(fit_texts) for v in vectorizers]).tocsr()
    return vectorizers, fitted, hstack([v.transform(other_texts) for v in vectorizers]).tocsr()


def fit_tfidf(texts: list[str], labels: list[str], seed: int, settings: dict | None = None) -> Learner:
    """TF-IDF + logistic regression; C chosen by cross-validated macro-F1 unless `settings` (an earlier fit's)
    fixes it."""
    if settings is None:
        def fold_features(_, train_index, test_index):
            return _tfidf_features([texts[i] for i in train_index], [texts[i] for i in test_index])[1:]
        settings = _choose_c(fold_features, labels, seed)
    vectorizers, features, _ = _tfidf_features(texts, texts[:1])
    return Learner("tfidf", settings, _fit_linear(features, labels, settings["C"]), vectorizers)


def fit_embedding(vectors: np.ndarray, labels: list[str], seed: int, settings: dict | None = None) -> Learner:
    """Logistic regression on sentence vectors; C chosen by cross-validated macro-F1 unless `settings` fixes it."""
    if settings is None:
        settings = _choose_c(lambda _, a, b: (vectors[a], vectors[b]), labels, seed)
    return Learner("embedding", settings, _fit_linear(vectors, labels, settings["C"]))


# ---------------------------------------------------------------- saving and loading


def save(learner: Learner, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"coef": learner.linear.coef, "intercept": learner.linear.intercept}
    vectorizers = []
    for i, vectorizer in enumerate(learner.vectorizers):
        arrays[f"idf{i}"] = vectorizer.idf_.astype(np.float64)
        vectorizers.append({"analyzer": vectorizer.analyzer, "ngram_range": list(vectorizer.ngram_range),
                            "vocabulary": {term: int(index) for term, index in vectorizer.vocabulary_.items()}})
    np.savez(folder / ARRAYS_FILE, **arrays)
    (folder / LEARNER_FILE).write_text(json.dumps({
        "kind": learner.kind, "labels": learner.labels, "settings": learner.settings,
        "vectorizers": vectorizers}, ensure_ascii=False), encoding="utf-8")


def load(folder: Path) -> Learner:
    """A learner saved by `save` (NumPy arrays read without pickle)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    spec = json.loads((folder / LEARNER_FILE).read_text(encoding="utf-8"))
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
        linear = Linear(list(spec["labels"]), arrays["coef"], arrays["intercept"])
        vectorizers = []
        for i, saved in enumerate(spec["vectorizers"]):
            vectorizer = TfidfVectorizer(**TFIDF_SETTINGS, analyzer=saved["analyzer"],
                                         ngram_range=tuple(saved["ngram_range"]))
            vectorizer.vocabulary_ = saved["vocabulary"]
            vectorizer.idf_ = arrays[f"idf{i}"]
            vectorizers.append(vectorizer)
    return Learner(spec["kind"], spec["settings"], linear, vectorizers)
