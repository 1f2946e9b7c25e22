"""Benchmark: how to cut a text longer than the backbone reads (finetune.truncation), on cfpb_payday_2023.

    python -m benchmarks.truncation [--max-length 512] [--data DIR] [--out FILE] [--cache DIR]

Rows: cfpb_payday_2023 as `nichetune bench quality` splits it (benchmarks.quality.cfpb_split): complaints of
January-June 2023 to train on, July-August to test on.
Vectors: the packaged MiniLM, frozen; mean pooling over the attention mask, L2-normalised. Modes:
- head: the first max_length tokens (truncation: head);
- head_tail@S: share S of the kept tokens from the start of the text, the rest from its end; S = HEAD_SHARE is
  what truncation: head_tail does (tasks.inference), the other shares are candidates for it; S = 0 is the end alone;
- chunks: the whole text in consecutive windows of equal size (at most max_length tokens each, special tokens
  included), one vector per window, their mean. Measured here only, to see whether it is worth building.
Only texts longer than max_length differ between modes: every other text is embedded once and its vector reused.
Vectors are kept in --cache (default <base.workdir>/bench/truncation), keyed by the texts, mode and max length.
Learner: logistic regression (class_weight balanced), C chosen among CS by 5-fold cross-validation
(LogisticRegressionCV, log loss) on the rows it is fitted on.
Validation (where the mode is chosen): 5 stratified folds of the training rows; each fold's rows are predicted by
a learner fitted, C included, on the other four; accuracy and macro-F1 over every training row, on the rows longer
than max_length alone, and paired bootstrap 95% intervals (1,000 resamples) of each mode's macro-F1 minus head's
and of its accuracy on the long rows minus head's. Rule, fixed before the run: the mode with the best validation macro-F1 becomes
the default unless it is within 0.5 point of head's, in which case head stays (no change without evidence).
Test: the learner fitted on all training rows, scored on the test months; reported, never used to choose.
The decision and what waits for a GPU are the `notes` of benchmarks/results/truncation.json, shown under the tables."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.quality import RESULTS, bench_workdir, load_split, machine
from benchmarks.sources import add_data_option

OUT = RESULTS / "truncation.json"
SHARES = (0.0, 0.125, 0.25, 0.5)  # head_tail@S candidates; HEAD_SHARE must be one of them
CS = (1.0, 3.0, 10.0, 30.0, 100.0)  # every fold chose 10 in a first run over 0.1-100
FOLDS = 5
RESAMPLES = 1000
MIN_GAIN = 0.005  # macro-F1 a mode must win by over head to become the default
BATCH = 32


def modes() -> list[str]:
    return ["head", *[f"head_tail@{share:g}" for share in SHARES], "chunks"]


def pieces(row: dict[str, list[int]], special: list[int], max_length: int, mode: str) -> list[dict]:
    """The token sequences the backbone reads for one whole tokenized text under `mode` (one, or one per chunk)."""
    from tasks.inference import head_and_tail

    if len(special) <= max_length:
        return [row]
    if mode == "head":
        return [head_and_tail(row, special, max_length, head_share=1.0)]
    if mode.startswith("head_tail@"):
        return [head_and_tail(row, special, max_length, head_share=float(mode.split("@")[1]))]
    front = next(i for i, flag in enumerate(special) if not flag)
    back = next(i for i, flag in enumerate(reversed(special)) if not flag)
    body = len(special) - front - back
    count = math.ceil(body / (max_length - front - back))
    size = math.ceil(body / count)
    return [{key: values[:front] + values[front + start : front + min(start + size, body)] + values[len(values) - back:]
             for key, values in row.items()} for start in range(0, body, size)]


def embed(texts: list[str], mode: str, max_length: int) -> np.ndarray:
    """One L2-normalised vector per text: the mean of its pieces' mean-pooled vectors."""
    import torch

    from benchmarks.quality import sentence_encoder
    from tasks.inference import mean_pool

    tokenizer, model, device = sentence_encoder()
    encoded = tokenizer(texts, truncation=False, return_special_tokens_mask=True, verbose=False)
    owners, sequences = [], []
    for i in range(len(texts)):
        row = {key: values[i] for key, values in encoded.items()}
        for piece in pieces(row, row.pop("special_tokens_mask"), max_length, mode):
            owners.append(i)
            sequences.append(piece)
    sums = torch.zeros(len(texts), model.config.hidden_size)
    order = np.argsort([len(piece["input_ids"]) for piece in sequences], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            batch = tokenizer.pad([sequences[i] for i in index], padding=True, return_tensors="pt").to(device.device)
            pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]).float().cpu()
            sums.index_add_(0, torch.as_tensor([owners[i] for i in index]), pooled)
    counts = torch.bincount(torch.as_tensor(owners), minlength=len(texts)).clamp(min=1).unsqueeze(1)
    return torch.nn.functional.normalize(sums / counts, dim=1).numpy()


def cached_vectors(texts: list[str], mode: str, max_length: int, long: np.ndarray, base: np.ndarray | None,
                   cache: Path) -> tuple[np.ndarray, float]:
    """Vectors of `texts` under `mode` (from `cache` when there) and the seconds spent embedding; with `base`
    (head's vectors), only the `long` texts are embedded, the others copied."""
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = cache / f"{digest}-{max_length}-{mode}.npz"
    if path.is_file():
        stored = np.load(path)
        return stored["vectors"], float(stored["seconds"])
    started = time.perf_counter()
    if base is None:
        vectors = embed(texts, mode, max_length)
    else:
        vectors = base.copy()
        vectors[long] = embed([texts[i] for i in np.flatnonzero(long)], mode, max_length)
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, vectors=vectors, seconds=seconds)
    return vectors, seconds


def learner(seed: int):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    return LogisticRegressionCV(Cs=list(CS), cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed),
                                scoring="neg_log_loss", class_weight="balanced", max_iter=3000, n_jobs=2,
                                l1_ratios=(0,), use_legacy_attributes=False)


def validation_predictions(vectors: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, list[float]]:
    """Each training row predicted by a learner fitted on the other folds, and the C each fold chose."""
    from sklearn.model_selection import StratifiedKFold

    predicted, chosen = np.empty(len(labels), dtype=object), []
    for fit, held in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(vectors, labels):
        model = learner(seed).fit(vectors[fit], labels[fit])
        predicted[held] = model.predict(vectors[held])
        chosen.append(float(model.C_))
    return predicted, chosen


def scores(labels: np.ndarray, predicted: np.ndarray, long: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": 100 * accuracy_score(labels, predicted),
            "macro_f1": 100 * f1_score(labels, predicted, average="macro", zero_division=0),
            "long_accuracy": 100 * accuracy_score(labels[long], predicted[long]), "long_rows": int(long.sum())}


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return f1_score(labels, predicted, average="macro", zero_division=0)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(labels == predicted))


def paired_interval(labels: np.ndarray, predicted: np.ndarray, reference: np.ndarray, seed: int,
                    metric=macro_f1) -> list[float]:
    """95% paired bootstrap interval of metric(predicted) - metric(reference), in points."""
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(RESAMPLES):
        index = rng.integers(0, len(labels), len(labels))
        gaps.append(metric(labels[index], predicted[index]) - metric(labels[index], reference[index]))
    return [100 * float(np.percentile(gaps, 2.5)), 100 * float(np.percentile(gaps, 97.5))]


def choose(validation: dict[str, dict]) -> str:
    """The rule in the module docstring: the best validation macro-F1, unless head is within MIN_GAIN of it."""
    best = max(validation, key=lambda mode: validation[mode]["macro_f1"])
    return best if validation[best]["macro_f1"] - validation["head"]["macro_f1"] >= 100 * MIN_GAIN else "head"


def token_counts(texts: list[str]) -> np.ndarray:
    from benchmarks.quality import sentence_encoder

    tokenizer = sentence_encoder()[0]
    return np.array([len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]])


def run(max_length: int, data: Path, cache: Path, seed: int = 0) -> dict:
    """Every mode on validation folds of the training rows and on the test months (see the module docstring)."""
    split = load_split("cfpb_payday_2023", seed, data)
    train_texts, test_texts = split.train["text"].tolist(), split.test["text"].tolist()
    train_labels, test_labels = split.train["label"].to_numpy(), split.test["label"].to_numpy()
    texts = train_texts + test_texts
    long = token_counts(texts) > max_length
    train_long, test_long = long[: len(train_texts)], long[len(train_texts):]
    vectors, seconds, base = {}, {}, None
    for mode in modes():
        vectors[mode], seconds[mode] = cached_vectors(texts, mode, max_length, long, base, cache)
        base = vectors["head"]
        print(f"{mode}: vectors in {seconds[mode]:.0f} s", file=sys.stderr)
    validation, test, predicted = {}, {}, {}
    for mode in modes():
        train_vectors, test_vectors = vectors[mode][: len(train_texts)], vectors[mode][len(train_texts):]
        predicted[mode], chosen = validation_predictions(train_vectors, train_labels, seed)
        validation[mode] = {**scores(train_labels, predicted[mode], train_long), "fold_C": chosen}
        model = learner(seed).fit(train_vectors, train_labels)
        test[mode] = {**scores(test_labels, model.predict(test_vectors), test_long), "C": float(model.C_)}
        print(f"{mode}: validation {validation[mode]}, test {test[mode]}", file=sys.stderr)
    for mode in modes():
        validation[mode]["macro_f1_minus_head_95"] = paired_interval(train_labels, predicted[mode],
                                                                     predicted["head"], seed)
        validation[mode]["long_accuracy_minus_head_95"] = paired_interval(
            train_labels[train_long], predicted[mode][train_long], predicted["head"][train_long], seed, accuracy)
    return {"max_length": max_length, "train_rows": len(train_texts),
            "test_rows": len(test_texts), "embed_seconds": seconds, "validation": validation, "test": test,
            "choice": choose(validation)}


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: one row per mode, validation (where the default is chosen) then test."""
    if not results:
        return ["## Long texts: how to cut them", "", "Not measured yet: `python -m benchmarks.truncation`.", ""]
    lines = ["## Long texts: how to cut them (finetune.truncation)", "",
             "Protocol in `benchmarks/truncation.py`; `benchmarks/results/truncation.json`. cfpb_payday_2023, frozen "
             "MiniLM sentence vectors + logistic regression (C by 5-fold cross-validation), texts cut to "
             "max_length tokens. head_tail@S keeps share S of the tokens from the start and the rest from the end "
             "(`truncation: head_tail` is S = `HEAD_SHARE` in `tasks/inference.py`); chunks averages the vectors "
             "of equal windows over the whole text (measured only). Validation: 5 folds of the training months, "
             "every training row predicted once; Δ: paired bootstrap 95% interval of the difference from head, "
             "in points. Long: rows over max_length tokens, the only texts the modes cut differently. Rule (fixed "
             "before the first run): the best validation macro-F1 wins unless head is within 0.5 point of it. "
             "Test: July-August, reported, not used to choose.", ""]
    for run_ in results["runs"]:
        r = run_["result"]
        v, t = r["validation"], r["test"]
        lines += [f"max_length {r['max_length']}: {r['train_rows']} training rows ({v['head']['long_rows']} long), "
                  f"{r['test_rows']} test rows ({t['head']['long_rows']} long); the rule's pick: "
                  f"**{r['choice']}**. `{run_['command']}`, {run_['date']}, {run_['machine']}.", "",
                  "| mode | val accuracy | val macro-F1 | Δ | val long accuracy | Δ | test accuracy | test macro-F1 "
                  "| test long accuracy | embed s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for mode, scores_ in v.items():
            gaps = ["" if mode == "head" else "{:+.1f} to {:+.1f}".format(*scores_[key])
                    for key in ("macro_f1_minus_head_95", "long_accuracy_minus_head_95")]
            lines.append(f"| {mode} | {scores_['accuracy']:.1f} | {scores_['macro_f1']:.1f} | {gaps[0]} | "
                         f"{scores_['long_accuracy']:.1f} | {gaps[1]} | {t[mode]['accuracy']:.1f} | "
                         f"{t[mode]['macro_f1']:.1f} | {t[mode]['long_accuracy']:.1f} | "
                         f"{r['embed_seconds'][mode]:.0f} |")
        lines.append("")
    for note in results.get("notes", []):  # the decision, written beside the figures it rests on
        lines += [note, ""]
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.truncation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=512, help="tokens the backbone reads (default 512)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results file, merged by max length ({OUT})")
    parser.add_argument("--cache", type=Path, default=None, help="vector cache (default <workdir>/bench/truncation)")
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    result = run(args.max_length, args.data, args.cache or bench_workdir() / "truncation")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    command = "python -m benchmarks.truncation" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    info = machine()
    entry = {"command": command, "date": datetime.now(timezone.utc).date().isoformat(),
             "machine": f"{info['arch']}, {info['cores']} cores, {info['gpu'] or 'no GPU'}", "result": result}
    results["runs"] = [run_ for run_ in results["runs"] if run_["result"]["max_length"] != args.max_length] + [entry]
    results["runs"].sort(key=lambda run_: -run_["result"]["max_length"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(section(results)))
    return results


if __name__ == "__main__":
    main()
