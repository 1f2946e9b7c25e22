"""A saved `auto` model: the candidates that won a share of the vote, each with its weight, and one temperature
for the mixture. It predicts like a single Classifier (same `predict_proba`, `embed`, `labels`), so prediction,
serving, evaluation, drift and explanations need not know which they hold: `load_classifier` picks.

A model folder of strategy auto holds the card (nichetune.json) and members/<name>/: a fine-tuned classifier
(see tasks.model) or a learner (see tasks.learners)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import learners
from tasks.calibration import apply_temperature
from tasks.errors import ModelLoadError
from tasks.model import MODEL_CARD, Classifier, Device, base_folder, loading, read_card, resolve_device, \
    sentence_vectors

AUTO = "auto"
MEMBERS_DIR = "members"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (how all-MiniLM-L6-v2's sentence vectors are compared)."""
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def aligned(probs: np.ndarray, have: list[str], want: list[str]) -> np.ndarray:
    """`probs` over labels `have` as columns over `want` (a label a member never saw gets 0)."""
    if have == want:
        return np.asarray(probs, dtype=np.float64)
    out = np.zeros((len(probs), len(want)))
    for j, label in enumerate(have):
        out[:, want.index(label)] = probs[:, j]
    return out


class Portfolio:
    """The weighted mixture of an auto model's members, calibrated by one temperature."""

    def __init__(self, model_dir: Path | str, device: Device | None = None, batch_size: int = 64):
        model_dir = Path(model_dir)
        card = read_card(model_dir)
        self.device = device or resolve_device("auto")
        self.batch_size = batch_size
        self.labels: list[str] = card["labels"]
        self.max_length = card["max_length"]
        self.strategy = card["strategy"]
        self.base_name = card["base"]
        self.model_dir = model_dir
        self.temperature = float(card.get("temperature", 1.0))
        self.truncation = card.get("truncation", "head")
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None  # _vectors' last texts and their vectors
        if not card.get("members"):
            raise ModelLoadError(f"{model_dir / MODEL_CARD}: an auto model without members; train it again")
        self.members: list[tuple[str, float, object]] = []
        for member in card["members"]:
            folder = model_dir / member["folder"]
            if (folder / MODEL_CARD).is_file():
                loaded = Classifier(folder, self.device, batch_size)
            else:
                with loading(folder, f"the {member['name']} member"):
                    loaded = learners.load(folder)
            self.members.append((member["name"], float(member["weight"]), loaded))

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """The base backbone's sentence vectors of `texts`. The last call's are kept: evaluate asks for the same
        rows twice (the embedding member's prediction, then the drift reports' reference), a minute or more
        each time on long texts."""
        key = tuple(texts)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        vectors = sentence_vectors(base_folder(self.model_dir, self.base_name), texts, self.device, self.batch_size,
                                   self.max_length, self.truncation)
        self._last = (key, vectors)
        return vectors

    def remember_vectors(self, texts: list[str], vectors: np.ndarray) -> None:
        """Take `vectors` as the base backbone's sentence vectors of `texts` (a caller's cache of them), for the
        next call on these texts."""
        self._last = (tuple(texts), vectors)

    @property
    def reads_vectors(self) -> bool:
        """Whether a member predicts from the base backbone's sentence vectors."""
        return any(isinstance(member, learners.Learner) and member.kind == "embedding"
                   for _, _, member in self.members)

    def member_probabilities(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Each member's probabilities over the model's labels (before mixing and the mixture's temperature)."""
        out, vectors = {}, None
        for name, _, member in self.members:
            if isinstance(member, Classifier):
                out[name] = aligned(member.predict_proba(texts), member.labels, self.labels)
            elif member.kind == "embedding":
                vectors = unit_rows(self._vectors(texts)) if vectors is None else vectors
                out[name] = aligned(member.predict_proba(vectors=vectors), member.labels, self.labels)
            else:
                out[name] = aligned(member.predict_proba(texts), member.labels, self.labels)
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities, one row per text."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        probs = self.member_probabilities(texts)
        mixed = sum(weight * probs[name] for name, weight, _ in self.members)
        return apply_temperature(mixed, self.temperature).astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Sentence vectors of the base backbone: the space drift is measured in, as for every model on it."""
        return self._vectors(texts)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


def load_classifier(model_dir: Path | str, device: Device | None = None, batch_size: int = 64):
    """The saved model in `model_dir`, whichever strategy trained it: a Portfolio for auto, else a Classifier."""
    if read_card(Path(model_dir))["strategy"] == AUTO:
        return Portfolio(model_dir, device, batch_size)
    return Classifier(model_dir, device, batch_size)
