"""Temperature scaling (Guo et al., 2017): one number T, fitted on validation rows, that makes probabilities mean
what they say. Calibrated probabilities are softmax(log p / T): the order of the labels, and so every prediction,
stays as it was; only the confidence moves."""

from __future__ import annotations

import numpy as np

FLOOR = 1e-12  # log of a probability that underflowed to 0
LIMITS = (0.05, 20.0)  # T outside this range means the validation rows are too few to say anything


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by `temperature` (> 1 softens, < 1 sharpens, 1 leaves them)."""
    if temperature == 1.0:
        return probs
    scores = np.log(np.clip(np.asarray(probs, dtype=np.float64), FLOOR, None)) / temperature
    scores -= scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.asarray(probs).dtype)


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before a temperature was applied (exact up to floating point)."""
    return apply_temperature(probs, 1.0 / temperature)


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (`targets`: column indices)."""
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, FLOOR, None)).mean())


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """The T that minimises the validation rows' log loss; 1.0 without rows to fit on."""
    from scipy.optimize import minimize_scalar

    if len(targets) == 0:
        return 1.0
    found = minimize_scalar(lambda log_t: log_loss(apply_temperature(probs, float(np.exp(log_t))), targets),
                            bounds=tuple(np.log(LIMITS)), method="bounded")
    return float(np.exp(found.x))
