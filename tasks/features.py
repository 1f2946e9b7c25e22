"""Outputs of the frozen part of the backbone, computed once per dataset version and kept on disk: the
sentence vectors for strategy `head`, the output of the last frozen layer for strategy `freeze`. The cache key
covers the backbone's files, the layer, the maximum length, the truncation and every text, so a changed input is
a miss."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.inference import length_batches, mean_pool
from tasks.model import Device, SentenceClassifier

CACHE_BATCH = 64


@dataclass
class Features:
    """Per text: a pooled vector (`pooled`, when the whole backbone is frozen) or the token vectors of a
    middle layer (`tokens`, one tensor of shape (length, hidden) per text)."""

    layer: int
    pooled: torch.Tensor | None = None
    tokens: list[torch.Tensor] | None = None
    from_cache: bool = False

    def batch(self, index: torch.Tensor, device: Device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The inputs of the trainable part for rows `index`: pooled vectors, or padded tokens and a mask."""
        if self.pooled is not None:
            return self.pooled[index].to(device.device), None
        rows = [self.tokens[i] for i in index.tolist()]
        longest = max(len(row) for row in rows)
        hidden = torch.zeros(len(rows), longest, rows[0].shape[1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, row in enumerate(rows):
            hidden[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return hidden.to(device.device), mask.to(device.device)


def backbone_fingerprint(path: str) -> str:
    """Names, sizes and modification times of the backbone's files: changes when the weights change."""
    folder = Path(path)
    if not folder.is_dir():
        return path  # a hub id: its name is all there is
    entries = sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.iterdir() if p.is_file())
    return "|".join(entries)


def cache_key(backbone: str, layer: int, pooled: bool, max_length: int, truncation: str,
              texts: list[str], precision: str = "fp32") -> str:
    digest = hashlib.sha256()
    # bf16's outputs differ in their last digits: kept apart (fp32's keys are those from before precisions)
    parts = [] if precision == "fp32" else [precision]
    for part in (backbone_fingerprint(backbone), str(layer), str(pooled), str(max_length), truncation, *parts,
                 *texts):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


@torch.inference_mode()
def compute(model: SentenceClassifier, tokenizer, texts: list[str], layer: int, pooled: bool,
            max_length: int, device: Device, truncation: str = "head") -> Features:
    """Run the frozen part once over `texts` in length order, each batch padded to its own longest text."""
    was_training = model.training
    model.eval()
    vectors = torch.zeros(len(texts), model.bert.config.hidden_size) if pooled else None
    tokens: list[torch.Tensor | None] = [None] * len(texts)
    for index, batch in length_batches(tokenizer, texts, CACHE_BATCH, max_length, device.device, truncation):
        with device.autocast():
            hidden = model.hidden_at(layer, **batch).float()
        if pooled:
            vectors[torch.as_tensor(index)] = mean_pool(hidden, batch["attention_mask"]).cpu()
        else:
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row, i in enumerate(index):
                tokens[i] = hidden[row, : lengths[row]].cpu().clone()
    model.train(was_training)
    return Features(layer, pooled=vectors, tokens=None if pooled else tokens)


def frozen_features(model: SentenceClassifier, tokenizer, texts: list[str], layer: int, max_length: int,
                    truncation: str, device: Device, backbone: str, cache_dir: Path | None) -> Features:
    """Features of `texts` at `layer` (pooled when `layer` is the top), each text cut to `max_length` tokens by
    `truncation`, from `cache_dir` when present there."""
    pooled = layer == model.depth
    if cache_dir is None:
        return compute(model, tokenizer, texts, layer, pooled, max_length, device, truncation)
    key = cache_key(backbone, layer, pooled, max_length, truncation, texts, device.precision)
    path = cache_dir / f"{key}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        return Features(layer, pooled=stored.get("pooled"), tokens=stored.get("tokens"), from_cache=True)
    features = compute(model, tokenizer, texts, layer, pooled, max_length, device, truncation)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    stored = {"pooled": features.pooled} if pooled else {"tokens": features.tokens}
    torch.save(stored, partial)
    partial.replace(path)  # atomic: a killed run never leaves half a cache file under the real name
    return features
