"""Temperature scaling (Guo et al., 2017): one number T, fitted on validation rows, that makes probabilities mean
what they say. Calibrated probabilities are softmax(log p / T): the order of the labels, and so every prediction,
stays as it was; only the confidence moves."""

from __future__ import annotations

import numpy as np

FLOOR = 1e-12  # log of a probability that underflowed to 0
LIMITS = (0.05, 20.0)  # T outside this range means the validation rows are too few to say anything
# log T ~ Normal(0, PRIOR_SD): a weak pull towards T = 1, which counts on a dozen rows and fades on hundreds. On
# amazon counterfactual with 8 rows per class (16 cross-fitted validation rows), the log loss alone put T at 20 or
# near 0.1 on some seeds, and calibrated dev rows worse than no temperature there (BENCHMARKS.md, "Temperature on
# few validation rows")
PRIOR_SD = 2.0


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


def fit_temperature(probs: np.ndarray, targets: np.ndarray, prior_sd: float | None = PRIOR_SD) -> float:
    """The most probable T given the validation rows (their log loss) and a normal prior on log T around 0 of
    standard deviation `prior_sd` (None: the log loss alone); 1.0 without rows to fit on."""
    from scipy.optimize import minimize_scalar

    if len(targets) == 0:
        return 1.0
    pull = 0.0 if prior_sd is None else 1.0 / (2 * prior_sd ** 2 * len(targets))  # the prior, per row

    def loss(log_t: float) -> float:
        return log_loss(apply_temperature(probs, float(np.exp(log_t))), targets) + pull * log_t ** 2

    found = minimize_scalar(loss, bounds=tuple(np.log(LIMITS)), method="bounded")
    return float(np.exp(found.x))
