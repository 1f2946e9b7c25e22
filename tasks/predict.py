"""Prediction with a registered model: the MLflow pyfunc wrapper that `mlflow models serve` and
`mlflow.pyfunc.load_model` use, around the same Classifier the evaluate stage uses."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd



def predict_frame(classifier, texts: list[str]) -> pd.DataFrame:
    """One row per text: the predicted label, its probability, and one `prob_<label>` column per class."""
    probs = classifier.predict_proba(texts)
    frame = pd.DataFrame(probs, columns=[f"prob_{label}" for label in classifier.labels])
    frame.insert(0, "probability", probs.max(axis=1))
    frame.insert(0, "prediction", [classifier.labels[i] for i in probs.argmax(axis=1)])
    return frame


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """Input: a dataframe with a `text` column. Output: what `predict_frame` returns."""

    def load_context(self, context) -> None:
        # Imported here: MLflow pickles this class, and the module-level state of tasks.model (the loaded
        # shared backbones, with their locks) must not travel with it.
        from tasks.model import Classifier

        self.classifier = Classifier(context.artifacts["model_dir"])

    def __getstate__(self) -> dict:
        # MLflow may load and run the model on the input example before pickling it: the loaded classifier
        # (weights, locks) is rebuilt by load_context, never pickled.
        return {key: value for key, value in self.__dict__.items() if key != "classifier"}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_frame(self.classifier, model_input["text"].astype(str).tolist())
