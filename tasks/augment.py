"""Training-row augmentation that needs no download: random word deletion and random word swaps (the two
label-preserving operations of EDA, Wei and Zou 2019, that need no synonym resource)."""

from __future__ import annotations

import random

DELETE_PROBABILITY = 0.1
SWAPS = 1


def eda(text: str, rng: random.Random) -> str:
    """One augmented variant of `text`: each word dropped with probability 0.1 (at least one kept), then one
    random pair of words swapped. Texts of one word come back unchanged."""
    words = text.split()
    if len(words) < 2:
        return text
    kept = [word for word in words if rng.random() >= DELETE_PROBABILITY] or [rng.choice(words)]
    for _ in range(SWAPS):
        if len(kept) >= 2:
            i, j = rng.sample(range(len(kept)), 2)
            kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


def augment(texts: list[str], labels: list[str], copies: int, seed: int) -> tuple[list[str], list[str]]:
    """The rows followed by `copies` augmented variants of each, the same for the same seed."""
    rng = random.Random(seed)
    extra = [(eda(text, rng), label) for _ in range(copies) for text, label in zip(texts, labels)]
    return texts + [text for text, _ in extra], labels + [label for _, label in extra]
