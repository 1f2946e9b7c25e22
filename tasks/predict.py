"""Prediction with a registered model: the MLflow pyfunc wrapper that `mlflow models serve` and
`mlflow.pyfunc.load_model` use, around the same Classifier the evaluate stage uses."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

from tasks.model import Classifier


def predict_frame(classifier: Classifier, texts: list[str]) -> pd.DataFrame:
    """One row per text: the predicted label, its probability, and one `prob_<label>` column per class."""
    probs = classifier.predict_proba(texts)
    frame = pd.DataFrame(probs, columns=[f"prob_{label}" for label in classifier.labels])
    frame.insert(0, "probability", probs.max(axis=1))
    frame.insert(0, "prediction", [classifier.labels[i] for i in probs.argmax(axis=1)])
    return frame


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """Input: a dataframe with a `text` column. Output: what `predict_frame` returns."""

    def load_context(self, context) -> None:
        self.classifier = Classifier(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_frame(self.classifier, model_input["text"].astype(str).tolist())
