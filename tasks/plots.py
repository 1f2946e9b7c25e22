"""Images for reviewers: the confusion matrix and the reliability diagram of a holdout (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(truth: list[str], predicted: list[str], labels: list[str], path: Path) -> Path:
    """Counts of true (rows) against predicted (columns) labels, one cell per pair, written as a PNG. Only
    non-zero cells carry their count: with dozens of labels almost every cell is zero, and thousands of printed
    zeros hide the few confusions a reviewer looks for (and take most of the drawing time)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    size = max(5.0, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    display = ConfusionMatrixDisplay.from_predictions(truth, predicted, labels=labels, ax=axes, colorbar=False,
                                                      xticks_rotation="vertical", include_values=False)
    counts = display.confusion_matrix
    light, dark = display.im_.cmap(1.0), display.im_.cmap(0.0)  # scikit-learn's text colours on dark and light cells
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axes.text(column, row, str(count), ha="center", va="center",
                      color=light if count < counts.max() / 2 else dark)
    axes.set_title(f"Holdout confusion matrix ({len(truth)} rows)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def reliability_png(bins: list[dict], ece: float, path: Path) -> Path:
    """Accuracy against mean confidence per confidence bin (the bars), with the diagonal of perfect calibration."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 5))
    width = 1 / max(1, len(bins))
    filled = [b for b in bins if b["rows"]]
    axes.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
             edgecolor="black", alpha=0.7, label="accuracy in bin")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="black",
              label="mean confidence in bin")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (probability of the predicted label)",
             ylabel="accuracy", title=f"Reliability (ECE {ece:.3f})")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

