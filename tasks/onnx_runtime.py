"""Prediction from an exported model folder with onnxruntime, tokenizers and NumPy alone: no torch, no
scikit-learn, no nichetune. `nichetune export` copies this file into the folder as nichetune_onnx.py, so that the
folder runs on a device or an air-gapped machine; the registered model runs it too when register.runtime is onnx.

It computes what tasks.portfolio.Portfolio and tasks.model.Classifier compute, from the same saved weights:
texts cut the same way (head, or head and tail), the same TF-IDF features as scikit-learn, the same mixture and
temperatures. Only the transformer graphs may differ, by their quantization; the export measures by how much.

    from nichetune_onnx import load
    model = load("path/to/folder")
    model.predict(["where is my card?"])          # labels
    model.predict_proba(["where is my card?"])    # one row of calibrated probabilities per text

or from a shell, one text per line: python nichetune_onnx.py path/to/folder < texts.txt > predictions.csv
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

FORMAT = 1
MODEL_FILE = "model.json"  # labels, members and their weights, the mixture's temperature, how it was exported
MEMBER_FILE = "member.json"  # inside a graph's folder: its labels or vector size, max length, truncation
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
LEARNER_FILE, ARRAYS_FILE = "learner.json", "learner.npz"  # a TF-IDF or embedding learner, as tasks.learners saves it
BATCH_SIZE = 64
FLOOR = 1e-12


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=1, keepdims=True)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), as tasks.calibration applies it."""
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(np.asarray(probs, dtype=np.float64), FLOOR, None)) / temperature)


def cut(ids: list[int], special: list[int], max_length: int, head_share: float) -> list[int]:
    """One tokenized text cut to `max_length` tokens: its leading and trailing special tokens, then `head_share`
    of the rest from the start of the text and the remainder from its end (1.0: the start only)."""
    if len(ids) <= max_length:
        return ids
    front = next(i for i, flag in enumerate(special) if not flag)
    back = next(i for i, flag in enumerate(reversed(special)) if not flag)
    budget = max_length - front - back
    head = round(budget * head_share)
    end = len(ids) - back - (budget - head)
    return ids[: front + head] + ids[end:]


class Graph:
    """One ONNX graph and its tokenizer: class scores (a classifier member) or sentence vectors (the backbone that
    an embedding learner reads). Texts run in length order, each batch padded to its own longest text."""

    def __init__(self, folder: Path, threads: int | None = None, spinning: bool = True):
        import onnxruntime
        from tokenizers import Tokenizer

        spec = json.loads((folder / MEMBER_FILE).read_text(encoding="utf-8"))
        self.labels = spec.get("labels")
        self.temperature = float(spec.get("temperature", 1.0))
        self.max_length = int(spec["max_length"])
        self.head_share = float(spec["head_share"])
        self.pad_id = int(spec["pad_id"])
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        # a session's threads spin for a while after each run, waiting for more work: faster for a model of one
        # graph, but the next graph of a portfolio would share the cores with them (single texts 2x slower)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = onnxruntime.InferenceSession(str(folder / GRAPH_FILE), options,
                                                    providers=["CPUExecutionProvider"])
        self.width = int(self.session.get_outputs()[0].shape[-1])

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        encoded = self.tokenizer.encode_batch(texts)
        return [cut(e.ids, e.special_tokens_mask, self.max_length, self.head_share) for e in encoded]

    def run(self, texts: list[str]) -> np.ndarray:
        """The graph's output for each text, in the order of `texts`."""
        rows = self.token_ids(texts)
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        order = np.argsort([len(row) for row in rows], kind="stable")
        for start in range(0, len(rows), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            longest = max(len(rows[i]) for i in index)
            ids = np.full((len(index), longest), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(index), longest), dtype=np.int64)
            for j, i in enumerate(index):
                ids[j, : len(rows[i])] = rows[i]
                mask[j, : len(rows[i])] = 1
            out[index] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return softmax(self.run(texts) / self.temperature)


class Linear:
    """Logistic regression weights (binary: one row, as scikit-learn keeps it)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray):
        self.coef, self.intercept = coef, intercept

    def proba(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64) + self.intercept
        if self.coef.shape[0] == 1:
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        return softmax(scores)


_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
_SPACES = re.compile(r"\s\s+")


def word_ngrams(text: str, low: int, high: int) -> list[str]:
    tokens = _WORD.findall(text)
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    """Character n-grams inside word boundaries, each word padded with a space, as scikit-learn's char_wb."""
    grams = []
    for word in _SPACES.sub(" ", text).split():
        word = f" {word} "
        for n in range(low, high + 1):
            grams.extend(word[i : i + n] for i in range(max(len(word) - n, 0) + 1))
            if len(word) <= n:  # a word no longer than n is one gram, counted once
                break
    return grams


ANALYZERS = {"word": word_ngrams, "char_wb": char_wb_ngrams}


class Learner:
    """A TF-IDF or embedding learner of an auto model: logistic regression on sublinear TF-IDF (each vectorizer's
    rows scaled to unit length, then side by side) or on unit-length sentence vectors."""

    def __init__(self, folder: Path):
        spec = json.loads((folder / LEARNER_FILE).read_text(encoding="utf-8"))
        self.kind, self.labels = spec["kind"], list(spec["labels"])
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
            self.linear = Linear(arrays["coef"], arrays["intercept"])
            self.vectorizers = [(ANALYZERS[saved["analyzer"]], tuple(saved["ngram_range"]), saved["vocabulary"],
                                 arrays[f"idf{i}"]) for i, saved in enumerate(spec["vectorizers"])]

    def scores(self, texts: list[str]) -> np.ndarray:
        """The linear scores of TF-IDF features, computed sparsely (a text has a few hundred n-grams)."""
        out = np.zeros((len(texts), self.linear.coef.shape[0]), dtype=np.float64)
        offset = 0
        for analyzer, (low, high), vocabulary, idf in self.vectorizers:
            for row, text in enumerate(texts):
                counts = Counter(vocabulary[g] for g in analyzer(text.lower(), low, high) if g in vocabulary)
                if not counts:
                    continue
                index = np.fromiter(counts, dtype=np.int64)
                values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * idf[index]
                values = (values / np.linalg.norm(values)).astype(np.float32)
                out[row] += self.linear.coef[:, offset + index] @ values
            offset += len(idf)
        return out

    def predict_proba(self, texts: list[str] | None = None, vectors: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "embedding":
            return self.linear.proba(vectors @ self.linear.coef.T)
        return self.linear.proba(self.scores(texts))


def aligned(probs: np.ndarray, have: list[str], want: list[str]) -> np.ndarray:
    """`probs` over labels `have` as columns over `want` (a label a member never saw gets 0)."""
    if have == want:
        return probs
    out = np.zeros((len(probs), len(want)))
    for j, label in enumerate(have):
        out[:, want.index(label)] = probs[:, j]
    return out


class ExportedModel:
    """An exported model: one classifier graph, or an auto model's weighted members and one temperature.
    The members of a portfolio read each batch side by side, each graph on its share of the cores: a graph reads a
    single text about as fast on one core as on two, so one after the other each waited on thread hand-offs
    (BENCHMARKS.md, prediction runtimes: 1.4x the single-text speed, 1.2x the throughput with int8 graphs)."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        spec = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
        if spec.get("format") != FORMAT:
            raise ValueError(f"{folder / MODEL_FILE}: export format {spec.get('format')!r}, this runtime reads "
                             f"{FORMAT}; export the model again with this version")
        self.spec = spec
        self.labels: list[str] = list(spec["labels"])
        self.temperature = float(spec["temperature"])
        vectors = folder / spec["vectors"] if spec.get("vectors") else None
        graphs = [folder / member["folder"] for member in spec["members"]
                  if (folder / member["folder"] / GRAPH_FILE).is_file()] + [vectors] * bool(vectors)
        # side by side only where each graph gets a core of its own: on fewer cores (a predict beside a training)
        # the graphs take turns, or they would run more threads than the cores they were given
        cores = threads or len(os.sched_getaffinity(0))
        side_by_side = 1 < len(graphs) <= cores
        share = cores // len(graphs) if side_by_side else cores
        # a lone graph's threads may spin after each run, waiting for the next batch; side by side they would
        # take cores from the other graphs
        spinning = len(graphs) == 1
        self.vectors = Graph(vectors, share, spinning) if vectors else None
        self.members = []
        for member in spec["members"]:
            path = folder / member["folder"]
            loaded = Graph(path, share, spinning) if path in graphs else Learner(path)
            self.members.append((float(member["weight"]), loaded))
        # what reads the texts themselves: every graph (onnxruntime lets go of Python while it runs) and the
        # TF-IDF learners; an embedding learner reads the vectors graph's output
        self.readers = [self.vectors] * bool(vectors) + [
            member for _, member in self.members if not (isinstance(member, Learner) and member.kind == "embedding")]
        self.pool = ThreadPoolExecutor(len(self.readers), thread_name_prefix="nichetune-onnx") \
            if side_by_side else None

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities, one row per text, columns in the order of `labels`."""
        texts = [str(text) for text in texts]
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        read = self.pool.map(self.read, self.readers, [texts] * len(self.readers)) if self.pool else \
            [self.read(part, texts) for part in self.readers]
        outputs = {id(part): out for part, out in zip(self.readers, read)}
        mixed = np.zeros((len(texts), len(self.labels)))
        for weight, member in self.members:
            if isinstance(member, Graph):
                probs = softmax(outputs[id(member)] / member.temperature)
            elif member.kind == "embedding":
                raw = outputs[id(self.vectors)]
                vectors = raw / np.clip(np.linalg.norm(raw, axis=1, keepdims=True), FLOOR, None)
                probs = member.predict_proba(vectors=vectors)
            else:
                probs = outputs[id(member)]
            mixed += weight * aligned(probs, member.labels, self.labels)
        return apply_temperature(mixed, self.temperature).astype(np.float32)

    @staticmethod
    def read(part, texts: list[str]) -> np.ndarray:
        """A graph's raw output, or a TF-IDF learner's probabilities."""
        return part.run(texts) if isinstance(part, Graph) else part.predict_proba(texts)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


def load(folder: str | Path, threads: int | None = None) -> ExportedModel:
    """The exported model in `folder`; `threads`: cores it may use, shared among its graphs (default: all this
    process may)."""
    return ExportedModel(folder, threads)


def main(argv: list[str]) -> int:
    import csv

    if len(argv) != 1:
        print("usage: python nichetune_onnx.py FOLDER < texts.txt > predictions.csv", file=sys.stderr)
        return 2
    model = load(argv[0])
    texts = [line.rstrip("\r\n") for line in sys.stdin]
    readable = [text for text in texts if text.strip()]  # an empty line has nothing to read: no label made up
    probs = iter(model.predict_proba(readable)) if readable else iter(())
    writer = csv.writer(sys.stdout)
    writer.writerow(["text", "prediction", "probability"])
    for text in texts:
        row = next(probs) if text.strip() else None
        writer.writerow([text, "", ""] if row is None else [text, model.labels[int(row.argmax())], f"{row.max():.4f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
