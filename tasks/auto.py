"""Strategy `auto`: train a small portfolio of different learners on the training rows and keep the mixture that
scores best on validation rows carved from them (never the holdout: it stays for evaluation and the gate).

No single learner wins on every dataset: TF-IDF n-grams read rare domain words and long texts, the backbone's
frozen sentence vectors generalise from very few rows, the fine-tuned transformer wins when labels are plenty
(BENCHMARKS.md). So each candidate in `finetune.candidates` is fitted on the training rows less the validation
share and scored there (on small data, where that share would be a handful of rows, in stratified folds so
that every row is scored once). How they are weighed depends on how many validation rows judge them
(`choose_shrunk`): on fewer than FEW_ROWS the first candidate (the cheapest) is kept alone, since there even a
test of the mixture follows noise; on fewer than MIN_HELD_ROWS, the mixture of every candidate with equal weights
is kept when it beats the first candidate alone beyond noise on `finetune.choice_metric` (a paired bootstrap over
the validation rows), else the first candidate alone, since there the best-scoring weights are mostly luck; on
more, the weights that score best, shrunk towards equal ones by MIN_HELD_ROWS / rows (all the way at
MIN_HELD_ROWS rows, half at twice as many, less beyond). Each scored best on rows no candidate had
seen (BENCHMARKS.md, "How auto weighs its candidates"). One temperature then calibrates the model on
the same rows, and the chosen candidates are fitted on every training row."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import learners
from tasks.calibration import apply_temperature, fit_temperature, log_loss
from tasks.config import LEARNERS, FinetuneParams
from tasks.errors import ParamsError
from tasks.metrics import CONFIDENCE
from tasks.layout import LOG_FILE, MODEL_DIR
from tasks.model import MODEL_CARD, Classifier, backbone_path, read_card, resolve_device, sentence_vectors
from tasks.portfolio import AUTO, MEMBERS_DIR, aligned, unit_rows
from tasks.progress import say
from tasks.training import (WEIGHTS_FILE, FinetuneResult, OverTime, carve_validation, labeled_rows,
                            run_fingerprint, train_strategy)

CANDIDATES_DIR = "candidates"  # inside the stage folder while candidates train; removed once the model is saved
VALIDATION_FRACTION = 0.2  # when finetune.validation_fraction is 0: auto cannot choose without held-out rows
# fewer validation rows than this from one carve: cross-fit in folds instead. At 60, banking77 with 8 per intent less
# the pipeline's holdout (77 rows in one carve) scored as on 462 cross-fitted rows, in a third of the time
# (benchmarks/folds.py); amazon with 8 or 64 per class (4 and 26 rows) still cross-fits
MIN_HELD_ROWS = 60
# fewer validation rows than this: the first candidate alone, untested. On amazon with 8 per class (16 cross-fitted
# rows) the bootstrap test passed the equal mixture on 1 of 20 seeds, and there it scored 13 points of MCC below
# the first candidate on 1,000 dev rows, where the mixture beat it by 2 points at most on the other seeds
FEW_ROWS = 30
CROSS_FOLDS = 5


def weight_grid(members: int) -> list[tuple[float, ...]]:
    """Mixture weights to try: every candidate alone and every blend on a grid (tenths for up to three
    candidates, quarters beyond), weights summing to 1."""
    steps = 10 if members <= 3 else 4
    return [tuple(part / steps for part in parts) for parts in itertools.product(range(steps + 1), repeat=members)
            if sum(parts) == steps]


def score(probs: np.ndarray, targets: np.ndarray, metric: str) -> float:
    """Accuracy or macro-F1 (over the labels present in `targets`) of the most probable labels."""
    from sklearn.metrics import f1_score

    predicted = probs.argmax(axis=1)
    if metric == "accuracy":
        return float((predicted == targets).mean())
    return float(f1_score(targets, predicted, labels=np.unique(targets), average="macro"))


def choose(held: dict[str, np.ndarray], targets: np.ndarray, metric: str) -> tuple[dict[str, float], dict]:
    """The mixture weights with the best validation `metric`; ties go to the lower log loss, then to fewer
    candidates. Returns the weights and the chosen mixture's scores."""
    names = list(held)
    best_key, best = None, None
    for weights in weight_grid(len(names)):
        mixed = sum(w * held[name] for w, name in zip(weights, names))
        key = (score(mixed, targets, metric), -log_loss(mixed, targets), -sum(w > 0 for w in weights))
        if best_key is None or key > best_key:
            best_key, best = key, weights
    return ({name: w for name, w in zip(names, best) if w > 0},
            {metric: best_key[0], "log_loss": -best_key[1]})


def equal_subsets(names: list[str]) -> list[dict[str, float]]:
    """Every non-empty subset of the candidates, its members weighed equally: each alone, each pair, ..., all."""
    return [{name: 1 / size for name in subset} for size in range(1, len(names) + 1)
            for subset in itertools.combinations(names, size)]


def choose_subset(held: dict[str, np.ndarray], targets: np.ndarray, metric: str) -> tuple[dict[str, float], dict]:
    """The equally weighed subset with the best validation `metric`; ties go to the lower log loss, then to fewer
    candidates. Seven choices for three candidates, where the grid has 66: less room to fit noise."""
    best_key, best = None, None
    for weights in equal_subsets(list(held)):
        mixed = sum(w * held[name] for name, w in weights.items())
        key = (score(mixed, targets, metric), -log_loss(mixed, targets), -len(weights))
        if best_key is None or key > best_key:
            best_key, best = key, weights
    return best, {metric: best_key[0], "log_loss": -best_key[1]}


def gain(targets: np.ndarray, mixed: np.ndarray, alone: np.ndarray, metric: str, seed: int,
         confidence: float) -> dict[str, float]:
    """The paired bootstrap's `confidence` interval (`ci_low`, `ci_high`) of the gain in `metric` of probabilities
    `mixed` over `alone` on the validation rows, as the gate compares two models."""
    from tasks.metrics import paired_bootstrap

    def named(codes) -> list[str]:  # tasks.metrics scores label names
        return [str(code) for code in codes]

    return paired_bootstrap(named(targets), named(mixed.argmax(axis=1)), named(alone.argmax(axis=1)), seed,
                            confidence=confidence)[metric]


def first_alone(held: dict[str, np.ndarray], targets: np.ndarray, metric: str) -> tuple[dict[str, float], dict]:
    """The first candidate kept alone, with its validation scores."""
    first = next(iter(held))
    alone = held[first]
    return {first: 1.0}, {metric: score(alone, targets, metric), "log_loss": log_loss(alone, targets),
                          "fallback": first, "beyond_noise": False}


def choose_with_evidence(held: dict[str, np.ndarray], targets: np.ndarray, metric: str, seed: int,
                         mixtures: str = "grid", confidence: float = CONFIDENCE) -> tuple[dict[str, float], dict]:
    """The best of `mixtures` when it beats the first candidate alone beyond noise on the validation rows (the
    lower end of a paired bootstrap's `confidence` interval of the gain is above 0, as the gate compares two
    models), else that first candidate alone. On a few dozen validation rows every difference is noise, and there
    the first candidate (TF-IDF by default) held up best on rows no candidate had seen (BENCHMARKS.md, "How auto
    weighs its candidates"). `mixtures`: grid (`choose`), equal (every candidate with the same weight) or subsets
    (`choose_subset`)."""
    if mixtures == "equal":
        weights = {name: 1 / len(held) for name in held}
        mixed = sum(w * held[name] for name, w in weights.items())
        chosen = {metric: score(mixed, targets, metric), "log_loss": log_loss(mixed, targets)}
    elif mixtures == "subsets":
        weights, chosen = choose_subset(held, targets, metric)
    else:
        weights, chosen = choose(held, targets, metric)
    first = next(iter(held))
    if list(weights) == [first]:
        return weights, {**chosen, "fallback": first, "beyond_noise": False}
    mixed = sum(w * held[name] for name, w in weights.items())
    if gain(targets, mixed, held[first], metric, seed, confidence)["ci_low"] > 0:
        return weights, {**chosen, "fallback": first, "beyond_noise": True}
    return first_alone(held, targets, metric)


def choose_equal(held: dict[str, np.ndarray], targets: np.ndarray, metric: str, seed: int,
                 min_rows: int = MIN_HELD_ROWS, confidence: float = CONFIDENCE) -> tuple[dict[str, float], dict]:
    """Every candidate with the same weight, or the first candidate alone, with the burden of proof set by the
    number of validation rows: on fewer than `min_rows` the mixture must beat the first candidate beyond noise (as
    in auto's rule), on more the first candidate must beat the mixture beyond noise to be kept alone. Rule
    `rows/equal` of benchmarks/choice.py; its scores beside auto's: BENCHMARKS.md, "How auto weighs its
    candidates". `beyond_noise`: the one kept beat the other beyond noise."""
    first = next(iter(held))
    equal = {name: 1 / len(held) for name in held}
    mixed = sum(w * held[name] for name, w in equal.items())
    burden = "mixture" if len(targets) < min_rows else first
    gap = gain(targets, mixed, held[first], metric, seed, confidence) if len(held) > 1 else None
    better, worse = (gap["ci_low"] > 0, gap["ci_high"] < 0) if gap else (False, False)
    keep_mixture = better if burden == "mixture" else not worse
    kept = mixed if keep_mixture else held[first]
    return (equal if keep_mixture else {first: 1.0}), {
        metric: score(kept, targets, metric), "log_loss": log_loss(kept, targets), "fallback": first,
        "burden": burden, "beyond_noise": better if keep_mixture else worse}


def choose_shrunk(held: dict[str, np.ndarray], targets: np.ndarray, metric: str, seed: int,
                  min_rows: int = MIN_HELD_ROWS, few_rows: int = 0,
                  scaled: bool = False) -> tuple[dict[str, float], dict]:
    """On fewer than `few_rows` validation rows the first candidate alone; on fewer than `min_rows`,
    `choose_with_evidence` with equal weights; on more, the grid's best weights (`choose`) shrunk towards equal
    weights, with no test: enough rows to let the scores move the weights, too few to trust them alone. The
    share of equal weights is a half, or with `scaled` `min_rows` / rows, so that the more rows judge the
    weights, the more their scores count (equal weights at `min_rows` rows, halfway at twice as many, a seventh
    of the way at cfpb's 434).
    Rules `rows/shrunk` (`few_rows` 0), `few/shrunk` (`few_rows` FEW_ROWS) and `scaled` (auto's: FEW_ROWS and
    `scaled`) of benchmarks/choice.py. `shrunk`: the share of equal weights where the grid chose, else 0."""
    if len(targets) < min_rows:
        weights, chosen = (first_alone(held, targets, metric) if len(targets) < few_rows else
                           choose_with_evidence(held, targets, metric, seed, mixtures="equal"))
        return weights, {**chosen, "shrunk": 0.0}
    grid, _ = choose(held, targets, metric)
    share = min(1.0, min_rows / len(targets)) if scaled else 0.5
    weights = {name: (1 - share) * grid.get(name, 0.0) + share / len(held) for name in held}
    mixed = sum(w * held[name] for name, w in weights.items())
    return weights, {metric: score(mixed, targets, metric), "log_loss": log_loss(mixed, targets),
                     "fallback": next(iter(held)), "beyond_noise": False, "shrunk": share}


def prune(held: dict[str, np.ndarray], targets: np.ndarray, metric: str, seed: int,
          confidence: float = CONFIDENCE) -> dict[str, np.ndarray]:
    """The first candidate and every other one it does not beat beyond noise on the validation rows, since a
    much weaker member drags an equal mixture down. Rule `pruned/equal` of benchmarks/choice.py: `choose_equal`
    on these."""
    first = next(iter(held))
    return {name: probs for name, probs in held.items()
            if name == first or gain(targets, probs, held[first], metric, seed, confidence)["ci_high"] >= 0}


def folds_for(texts: list[str], names: list[str], fraction: float, seed: int,
              labeled: list[bool] | None = None) -> list[tuple[list[int], list[int]]]:
    """(fitting rows, validation rows) pairs. One carve of `fraction` of each label when that leaves at least
    MIN_HELD_ROWS to choose on; fewer are too noisy to choose by (amazon with 8 rows per class holds out 4), so
    then every row is held out once, in stratified folds, and each candidate is trained once per fold. Only
    `labeled` rows (default: all) are held out; the others (pseudo-labels) are always fitted on."""
    from sklearn.model_selection import StratifiedKFold

    labeled = labeled or [True] * len(names)
    fit, held = carve_validation(texts, names, fraction, seed, labeled)
    mine = [i for i, person in enumerate(labeled) if person]
    smallest = int(min(np.unique([names[i] for i in mine], return_counts=True)[1]))
    if len(held) >= MIN_HELD_ROWS or smallest < 2:
        return [(fit, held)]
    pseudo = [i for i, person in enumerate(labeled) if not person]
    folds = StratifiedKFold(n_splits=min(CROSS_FOLDS, smallest), shuffle=True, random_state=seed)
    return [(sorted([mine[j] for j in a] + pseudo), [mine[j] for j in b])
            for a, b in folds.split(np.zeros(len(mine)), [names[i] for i in mine])]


class Candidates:
    """Trains each candidate on the fitting rows of each fold and keeps its probabilities on the validation
    rows, then the chosen ones on every training row."""

    def __init__(self, train: pd.DataFrame, cfg: FinetuneParams, seed: int, stage_dir: Path,
                 work_dir: Path | None):
        self.train, self.cfg, self.seed, self.work_dir = train, cfg, seed, work_dir
        self.texts = train["text"].astype(str).tolist()
        self.names = train["label"].astype(str).tolist()
        self.labels = sorted(set(self.names))
        # one fold: the same carve a fine-tuning candidate makes for its early stopping, so it never sees
        # these rows either
        self.fraction = cfg.validation_fraction or VALIDATION_FRACTION
        self.folds = folds_for(self.texts, self.names, self.fraction, seed, labeled_rows(train))
        self.held = [i for _, held in self.folds for i in held]
        self.targets = np.array([self.labels.index(self.names[i]) for i in self.held])
        self.folder = stage_dir / CANDIDATES_DIR
        self.device = resolve_device(cfg.device, cfg.precision)
        self.vectors = None
        self.probs, self.report, self.settings = {}, [], {}
        self.result: FinetuneResult | None = None  # the fine-tuned candidate's record (one carve: its first run)
        self.final: FinetuneResult | None = None  # ... and of its training on every row, when there is one

    @property
    def cross_fitted(self) -> bool:
        return len(self.folds) > 1

    def _texts(self, index: list[int]) -> list[str]:
        return [self.texts[i] for i in index]

    def sentence_vectors(self) -> np.ndarray:
        if self.vectors is None:
            self.vectors = unit_rows(sentence_vectors(backbone_path(self.cfg.backbone), self.texts, self.device,
                                                      max_length=self.cfg.max_length,
                                                      truncation=self.cfg.truncation))
        return self.vectors

    def runs(self) -> float:
        """What the fine-tuned candidate costs in all, in units of its first run: once per fold, and once on
        every row (more rows) after cross-fitting or with refit retrain (its fewer epochs are not counted), or
        refit_epochs of its epochs with refit continue."""
        more_rows = len(self.texts) / len(self.folds[0][0])
        if self.cross_fitted or self.cfg.refit == "retrain":
            again = more_rows
        elif self.cfg.refit == "continue":
            again = more_rows * min(self.cfg.refit_epochs / self.cfg.epochs, 1.0)
        else:
            again = 0.0
        return len(self.folds) + again

    def _fold_probs(self, name: str, fit: list[int], held: list[int], fold: int,
                    limit: float | None = None) -> np.ndarray:
        """Candidate `name` fitted on rows `fit`, its probabilities (over self.labels) on rows `held`; a
        fine-tuning run projected past `limit` seconds raises OverTime."""
        fit_names = [self.names[i] for i in fit]
        if name == "tfidf":
            learner = learners.fit_tfidf(self._texts(fit), fit_names, self.seed)
            self.settings[name] = learner.settings
            return aligned(learner.predict_proba(self._texts(held)), learner.labels, self.labels)
        if name == "embedding":
            vectors = self.sentence_vectors()
            learner = learners.fit_embedding(vectors[fit], fit_names, self.seed)
            self.settings[name] = learner.settings
            return aligned(learner.predict_proba(vectors=vectors[held]), learner.labels, self.labels)
        if not self.cross_fitted:  # trained on all rows; it carves the same validation rows itself
            update = {"strategy": name, "validation_fraction": self.fraction}
            self.result = train_strategy(self.train, self.cfg.model_copy(update=update), self.seed,
                                         self.folder / name, self.work_dir, limit,
                                         keep_weights=self.cfg.refit == "continue")
            self.settings[name] = {"best_epoch": self.result.best_epoch, "temperature": self.result.temperature}
            model_dir = self.result.model_dir
        else:  # too few rows to stop early on: the set epochs, no checkpoints for a model trained in seconds
            fold_cfg = self.cfg.model_copy(update={"strategy": name, "validation_fraction": 0.0})
            model_dir = train_strategy(self.train.iloc[fit], fold_cfg, self.seed,
                                       self.folder / f"{name}-fold{fold}", None, limit).model_dir
        classifier = Classifier(model_dir, self.device)
        return aligned(classifier.predict_proba(self._texts(held)), classifier.labels, self.labels)

    def train_one(self, name: str, seconds_left: float | None = None) -> None:
        """Fit candidate `name` on each fold and score it. With `seconds_left`, a fine-tuned candidate whose
        first run projects its whole cost (`runs`) past them is left out, and the report says so."""
        started = time.perf_counter()
        limit = None if seconds_left is None or name in LEARNERS else seconds_left / self.runs()
        try:
            probs = np.concatenate([self._fold_probs(name, fit, held, fold, limit if fold == 0 else None)
                                    for fold, (fit, held) in enumerate(self.folds)])
        except OverTime as over:
            projected = over.projected * self.runs()
            self.report.append({"name": name, "left_out": "time_budget", "projected_seconds": projected,
                                "seconds": time.perf_counter() - started})
            say(f"auto: candidate {name} left out: it would train for about {projected / 60:.0f} min on this "
                f"machine ({self.device.name}), more than the {seconds_left / 60:.1f} min left of "
                f"finetune.time_budget {self.cfg.time_budget:g}; raise it (or set null) to train {name}")
            return
        self.probs[name] = probs
        settings = {} if self.cross_fitted else self.settings.get(name, {})
        self.report.append({"name": name, "accuracy": score(probs, self.targets, "accuracy"),
                            "macro_f1": score(probs, self.targets, "macro_f1"),
                            "log_loss": log_loss(probs, self.targets), "seconds": time.perf_counter() - started,
                            "settings": {k: v for k, v in settings.items() if k != "cv_macro_f1"}})
        say(f"auto: candidate {name}: validation accuracy {self.report[-1]['accuracy']:.3f}, macro-F1 "
            f"{self.report[-1]['macro_f1']:.3f} ({self.report[-1]['seconds']:.0f} s)")

    def on_every_row(self, name: str) -> Path:
        """The fine-tuned candidate trained on every training row, with the temperature the first run was
        calibrated to (none is left to fit one on): with refit retrain from the backbone for the epochs early
        stopping kept, with continue from the first run's weights for refit_epochs; after cross-fitting, from
        the backbone for the set epochs. With refit off, the first run itself (one carve only)."""
        first = self.result
        if first is not None and self.cfg.refit == "off":
            return first.model_dir
        start = None
        if first is not None and self.cfg.refit == "continue":
            start, epochs = first.model_dir.parent / WEIGHTS_FILE, self.cfg.refit_epochs
            say(f"auto: training {name} on all {len(self.texts)} training rows, {epochs} more epochs")
        else:
            epochs = (first.best_epoch if first is not None else None) or self.cfg.epochs
            say(f"auto: training {name} on all {len(self.texts)} training rows, {epochs} epochs")
        update = {"strategy": name, "validation_fraction": 0.0, "epochs": epochs}
        again = self.final = train_strategy(self.train, self.cfg.model_copy(update=update), self.seed,
                                            self.folder / f"{name}-all", self.work_dir, start=start)
        if first is not None:
            card_path = again.model_dir / MODEL_CARD
            card = json.loads(card_path.read_text())
            card["temperature"] = first.temperature
            card_path.write_text(json.dumps(card, indent=2) + "\n")
        return again.model_dir

    def save_member(self, name: str, folder: Path) -> None:
        """The chosen candidate, fitted on every training row, in the model folder. A fast learner keeps the
        settings its cross-validation chose on one carve's fitting rows; after cross-fitting it chooses them
        again on every row."""
        if name not in LEARNERS:
            shutil.move(str(self.on_every_row(name)), folder)
            return
        settings = None if self.cross_fitted else self.settings[name]
        if name == "tfidf":
            learner = learners.fit_tfidf(self.texts, self.names, self.seed, settings)
        else:
            learner = learners.fit_embedding(self.sentence_vectors(), self.names, self.seed, settings)
        learners.save(learner, folder)


def train_auto(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path,
               work_dir: Path | None = None) -> FinetuneResult:
    """Train the candidates, choose and calibrate their mixture, and save it to `out_dir`/model."""
    started = time.perf_counter()
    candidates = Candidates(train, cfg, seed, out_dir, work_dir)
    for name in cfg.candidates:
        left = None if cfg.time_budget is None else cfg.time_budget * 60 - (time.perf_counter() - started)
        candidates.train_one(name, left)
    if not candidates.probs:
        raise ParamsError(f"finetune.time_budget: {cfg.time_budget:g} min is too short for every candidate of "
                          f"finetune.candidates; raise it, or add tfidf or embedding (they train in minutes)")
    weights, chosen, temperature = choose_mixture(candidates)
    model_dir = save_portfolio(candidates, weights, temperature, out_dir, run_fingerprint(train, cfg, seed))
    shutil.rmtree(candidates.folder, ignore_errors=True)
    rows = len(candidates.targets)
    if chosen["shrunk"]:
        why = (f": the best weights on {rows} validation rows, {chosen['shrunk']:.0%} of the way towards equal"
               f" ones")
    elif rows < FEW_ROWS:
        why = f": {rows} validation rows are too few to choose a mixture on ({FEW_ROWS} are needed)"
    elif list(weights) == [chosen["fallback"]] and not chosen["beyond_noise"]:
        why = f": no mixture beat it beyond noise on {rows} validation rows"
    else:
        why = f": the equal mixture beat {chosen['fallback']} beyond noise on {rows} validation rows"
    say("auto: chose " + " + ".join(f"{name} {w:.2f}" for name, w in weights.items()) + why
        + f" (validation {cfg.choice_metric} {chosen[cfg.choice_metric]:.3f}, temperature {temperature:.2f})")
    tuned = candidates.final or candidates.result  # the fine-tuned member's training record, if one was chosen
    result = FinetuneResult(
        model_dir, candidates.labels, AUTO, candidates.device.name, time.perf_counter() - started,
        tuned.samples_per_second if tuned else 0.0, tuned.losses if tuned else [],
        tuned.validation if tuned else [], tuned.best_epoch if tuned else None,
        tuned.trainable_parameters if tuned else 0, tuned.features_cached if tuned else False,
        tuned.resumed_from_epoch if tuned else None, temperature, candidates.report,
        {"weights": weights, "validation_rows": len(candidates.held), "folds": len(candidates.folds), **chosen})
    (out_dir / LOG_FILE).write_text(json.dumps({**asdict(result), "model_dir": str(model_dir)}, indent=2))
    return result


def choose_mixture(candidates: Candidates) -> tuple[dict[str, float], dict, float]:
    """The scored candidates' weights, what chose them, and the temperature that calibrates their mixture on
    the validation rows."""
    weights, chosen = choose_shrunk(candidates.probs, candidates.targets, candidates.cfg.choice_metric,
                                    candidates.seed, few_rows=FEW_ROWS, scaled=True)
    mixed = sum(w * candidates.probs[name] for name, w in weights.items())
    temperature = fit_temperature(mixed, candidates.targets)
    chosen.update(temperature=temperature,
                  log_loss_calibrated=log_loss(apply_temperature(mixed, temperature), candidates.targets))
    return weights, chosen, temperature


def save_portfolio(candidates: Candidates, weights: dict[str, float], temperature: float, out_dir: Path,
                   fingerprint: str) -> Path:
    """The model folder: each chosen candidate under members/, and the card that weighs them."""
    cfg = candidates.cfg
    model_dir = out_dir / MODEL_DIR
    shutil.rmtree(model_dir, ignore_errors=True)
    (model_dir / MEMBERS_DIR).mkdir(parents=True)
    members = []
    for name, weight in weights.items():
        candidates.save_member(name, model_dir / MEMBERS_DIR / name)
        members.append({"name": name, "weight": weight, "folder": f"{MEMBERS_DIR}/{name}"})
    from transformers import AutoConfig

    hidden = AutoConfig.from_pretrained(backbone_path(cfg.backbone)).hidden_size
    card = {"format": 1, "labels": candidates.labels, "max_length": cfg.max_length, "strategy": AUTO,
            "base": cfg.backbone if cfg.backbone == "minilm" else backbone_path(cfg.backbone),
            "hidden_size": hidden, "encoder": MEMBERS_DIR, "fingerprint": fingerprint, "temperature": temperature,
            "truncation": cfg.truncation,
            "members": members}
    (model_dir / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    read_card(model_dir)  # the card the loaders will read: a missing key fails here, not at prediction
    return model_dir
