"""Explanations: word-level occlusion for a sample of correct and wrong holdout predictions, as one HTML page.

Occlusion needs nothing from the model but `predict_proba`, so it explains every fine-tuning strategy alike:
a word's attribution is how much the probability of the predicted class drops when that word alone is removed
(positive: the word supported the prediction; negative: it pulled towards another class)."""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.errors import DataError

MAX_WORDS = 64  # one forward pass per occluded word: longer texts are explained on their first 64 words


@dataclass(frozen=True)
class Explanation:
    """One explained row: its words (whitespace-split) and, for the first `max_words`, their attributions."""

    text: str
    label: str
    prediction: str
    probability: float  # of the predicted class, on the whole text
    words: list[str]
    attributions: list[float]  # one per occluded word: len(attributions) == min(len(words), max_words)

    @property
    def correct(self) -> bool:
        return self.label == self.prediction


def sample_rows(frame: pd.DataFrame, samples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to `samples` correct and `samples` wrong rows, drawn from `seed` alone and kept in frame order."""
    hit = (frame["label"].astype(str) == frame["prediction"].astype(str)).to_numpy()
    rng = np.random.default_rng(seed)
    picked = []
    for part in (frame[hit], frame[~hit]):
        index = rng.choice(len(part), size=min(samples, len(part)), replace=False) if samples else []
        picked.append(part.iloc[np.sort(np.asarray(index, dtype=int))])
    return picked[0], picked[1]


def occluded(words: list[str], max_words: int) -> list[str]:
    """The text with each of its first `max_words` words removed in turn (the other words kept, space-joined)."""
    return [" ".join(words[:i] + words[i + 1 :]) for i in range(min(len(words), max_words))]


def attribute(classifier, rows: pd.DataFrame, max_words: int = MAX_WORDS) -> list[Explanation]:
    """Occlusion attributions for every row, all variants of all texts scored in one `predict_proba` call."""
    texts = ["" if text is None else str(text) for text in rows["text"]]
    words = [text.split() for text in texts]
    variants = [occluded(w, max_words) for w in words]
    probs = classifier.predict_proba(texts + [v for vs in variants for v in vs])
    start = len(texts)
    explanations = []
    for i, (text, label, prediction) in enumerate(zip(texts, rows["label"], rows["prediction"])):
        column = _class_index(classifier.labels, str(prediction))
        base = float(probs[i, column])
        drops = [base - float(p) for p in probs[start : start + len(variants[i]), column]]
        start += len(variants[i])
        explanations.append(Explanation(text, str(label), str(prediction), base, words[i], drops))
    return explanations


def _class_index(labels: list[str], prediction: str) -> int:
    if prediction not in labels:
        raise DataError(f"prediction {prediction!r} is not one of the model's labels ({', '.join(labels)})")
    return labels.index(prediction)


def explain(classifier, frame: pd.DataFrame, samples: int, seed: int, html: Path,
            max_words: int = MAX_WORDS) -> dict:
    """Explain up to `samples` correct and `samples` wrong rows of `frame` (columns text, label, prediction)
    and write the page to `html`; with nothing to explain the page says so. Returns counts and the path."""
    correct, wrong = sample_rows(frame, samples, seed)
    groups = {"correct": attribute(classifier, correct, max_words) if len(correct) else [],
              "wrong": attribute(classifier, wrong, max_words) if len(wrong) else []}
    html = Path(html)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(render(groups, max_words, samples, len(frame)), encoding="utf-8")
    capped = sum(len(e.words) > max_words for part in groups.values() for e in part)
    return {"path": str(html), "correct": len(groups["correct"]), "wrong": len(groups["wrong"]),
            "max_words": max_words, "capped_texts": capped}


# ---------------------------------------------------------------- the page

STYLE = """body{font:15px/1.6 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
.row{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.meta{font-size:13px;color:#555;margin-bottom:.3em}.w{padding:0 2px;border-radius:3px}
.rest{color:#999}.key{display:inline-block;width:1.2em;height:1em;vertical-align:middle;border-radius:3px}"""


def render(groups: dict[str, list[Explanation]], max_words: int, samples: int, rows: int) -> str:
    """The whole page: a legend, then the correct and the wrong rows; every user text is escaped."""
    body = [f"<h1>Why the model predicted what it did</h1>{_legend(max_words)}"]
    if not any(groups.values()):
        body.append(f"<p><em>No rows to explain</em>: {samples} of each kind asked for (evaluate.explain_samples), "
                    f"{rows} holdout rows given.</p>")
    for kind, title in (("correct", "Correct predictions"), ("wrong", "Wrong predictions")):
        if groups[kind]:
            body.append(f"<h2>{title} ({len(groups[kind])})</h2>")
            body.extend(_row(e, max_words) for e in groups[kind])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>nichetune explanations</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def _legend(max_words: int) -> str:
    return ("<p>Word occlusion: each word is removed in turn, and its score is the drop in the probability of the "
            f"predicted class. <span class='key' style='background:{_colour(1, 1)}'></span> the word supported "
            f"the prediction; <span class='key' style='background:{_colour(-1, 1)}'></span> it pulled towards "
            "another class. Colour strength is relative to the largest score in the same text; hover a word for "
            f"its score. Only the first {max_words} words of a text are scored; <span class='rest'>grey</span> "
            "words after them were not.</p>")


def _row(e: Explanation, max_words: int) -> str:
    scale = max((abs(a) for a in e.attributions), default=0.0)
    spans = [f"<span class='w' style='background:{_colour(a, scale)}' title='{a:+.4f}'>{html_lib.escape(w)}</span>"
             for w, a in zip(e.words, e.attributions)]
    rest = " ".join(html_lib.escape(w) for w in e.words[max_words:])
    text = " ".join(spans) + (f" <span class='rest'>{rest}</span>" if rest else "") or "<em>(empty text)</em>"
    meta = (f"true: <b>{html_lib.escape(e.label)}</b> &middot; predicted: <b>{html_lib.escape(e.prediction)}</b> "
            f"(probability {e.probability:.3f})")
    return f"<div class='row'><div class='meta'>{meta}</div>{text}</div>"


def _colour(value: float, scale: float) -> str:
    """Green for support, red for opposition; transparent when the text has no effect at all."""
    alpha = 0.0 if scale <= 0 else min(abs(value) / scale, 1.0) * 0.75
    return f"rgba(0,150,60,{alpha:.2f})" if value >= 0 else f"rgba(210,30,30,{alpha:.2f})"
