"""Fine-tune: LoRA adapters (peft) on the pretrained backbone with a new classification head."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.config import FinetuneParams
from tasks.errors import ParamsError
from tasks.model import Device, backbone_path, resolve_device

MODEL_DIR = "model"
LOG_FILE = "training.json"


@dataclass(frozen=True)
class FinetuneResult:
    model_dir: Path  # a plain transformers classifier (adapter merged), with its tokenizer
    labels: list[str]
    device: str
    seconds: float
    samples_per_second: float
    losses: list[float]  # mean training loss per epoch


def seed_everything(seed: int) -> None:
    """Seed every generator a training run draws from; the seed comes from base.seed only."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: FinetuneParams, labels: list[str]):
    """The backbone with a new head for `labels`, wrapped with LoRA adapters: only adapters and head train."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        backbone_path(cfg.backbone),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        dtype=torch.float32,
    )
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # keeps the new classifier head trainable and saved with the adapter
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as err:  # a target module name that the backbone does not have
        raise ParamsError(
            f"finetune.lora_target_modules = {list(cfg.lora_target_modules)}: {' '.join(str(err).split())[:200]}"
        ) from None


def train_model(model, tokenizer, texts: list[str], targets: list[int], cfg: FinetuneParams,
                device: Device, seed: int) -> list[float]:
    """A plain PyTorch loop: shuffled batches padded to their own longest text, AdamW, linear warmup/decay."""
    from transformers import get_linear_schedule_with_warmup

    model.to(device.device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(texts) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * cfg.warmup_ratio), total)
    order_rng = torch.Generator().manual_seed(seed)
    labels = torch.tensor(targets)
    losses = []
    for _ in range(cfg.epochs):
        epoch_loss = 0.0
        for index in torch.randperm(len(texts), generator=order_rng).split(cfg.batch_size):
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                              max_length=cfg.max_length, return_tensors="pt").to(device.device)
            with device.autocast():
                logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[index].to(device.device))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item() * len(index)
        losses.append(epoch_loss / len(texts))
    return losses


def finetune(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path) -> FinetuneResult:
    """Train on the training rows and save a standalone classifier (adapter merged into the backbone)."""
    from transformers import AutoTokenizer

    seed_everything(seed)
    device = resolve_device(cfg.device)
    labels = sorted(train["label"].unique())
    tokenizer = AutoTokenizer.from_pretrained(backbone_path(cfg.backbone))
    model = build_model(cfg, labels)
    targets = [labels.index(label) for label in train["label"]]
    started = time.perf_counter()
    losses = train_model(model, tokenizer, train["text"].tolist(), targets, cfg, device, seed)
    seconds = time.perf_counter() - started
    merged = model.merge_and_unload()  # a plain model: reloads exactly, with no peft needed at prediction time
    merged.config.nichetune_max_length = cfg.max_length
    model_dir = out_dir / MODEL_DIR
    merged.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    result = FinetuneResult(model_dir, labels, device.name, seconds,
                            len(train) * cfg.epochs / seconds, losses)
    (out_dir / LOG_FILE).write_text(json.dumps({**result.__dict__, "model_dir": str(model_dir)}, indent=2))
    return result


def run(cfg: FinetuneParams, seed: int, train_path: Path, out_dir: Path) -> FinetuneResult:
    """Read the training rows and fine-tune."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return finetune(pd.read_parquet(train_path), cfg, seed, out_dir)


def main() -> None:
    """`python -m tasks.finetune`: the dvc.yaml stage (and the way to try the stage alone on a GPU box)."""
    from tasks.split import TRAIN_FILE
    from tasks.stage import stage_main

    stage_main(
        lambda params, paths: run(
            params.finetune, params.base.seed, paths.stage("split") / TRAIN_FILE, paths.stage("finetune")
        )
    )


if __name__ == "__main__":
    main()
