"""Batched inference shared by prediction, drift embeddings and the frozen-feature cache: texts in length
order, each batch tokenized and padded to its own longest text, and masked mean pooling of token vectors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors that the attention mask keeps (how all-MiniLM-L6-v2 was trained)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def length_batches(tokenizer, texts: list[str], batch_size: int, max_length: int,
                   device: torch.device) -> Iterator[tuple[np.ndarray, dict]]:
    """Batches of `texts` in length order (short texts together, so padding stays short), each tokenized,
    padded to its own longest text and moved to `device`, with the positions of its rows in `texts`."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(device)
        yield index, batch
