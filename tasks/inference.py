"""Batched inference shared by prediction, drift embeddings and the frozen-feature cache: texts in length
order, each batch tokenized and padded to its own longest text, and masked mean pooling of token vectors.
Tokenizing is shared with training (`encode`, `token_rows`), so that a text is cut the same way everywhere."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from tasks import cores

TRUNCATIONS = ("head", "head_tail")  # how a text longer than max_length is cut: its start, or start and end
# head_tail: the share of the kept tokens taken from the start, the rest from the end; the best of 0, 1/8, 1/4
# and 1/2 on cfpb validation rows at 256 and 512 tokens (benchmarks/truncation.py, BENCHMARKS.md)
HEAD_SHARE = 0.125


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors that the attention mask keeps (how all-MiniLM-L6-v2 was trained)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def head_and_tail(row: dict[str, list[int]], special: list[int], max_length: int,
                  head_share: float = HEAD_SHARE) -> dict[str, list[int]]:
    """One tokenized text (every per-token field) cut to `max_length` tokens: its leading and trailing special
    tokens, then `head_share` of the rest from the start of the text and the remainder from its end."""
    if len(special) <= max_length:
        return row
    front = next(i for i, flag in enumerate(special) if not flag)
    back = next(i for i, flag in enumerate(reversed(special)) if not flag)
    budget = max_length - front - back
    head = round(budget * head_share)
    end = len(special) - back - (budget - head)
    return {key: values[: front + head] + values[end:] for key, values in row.items()}


def token_rows(tokenizer, texts: list[str], max_length: int, truncation: str = "head") -> list[dict]:
    """Each text tokenized (with its special tokens, unpadded) and cut to `max_length` tokens by `truncation`."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation {truncation!r} is not one of {', '.join(TRUNCATIONS)}")
    if truncation == "head":
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
    else:  # whole texts first (verbose=False: being longer than the backbone takes is expected here)
        encoded = tokenizer(texts, truncation=False, return_special_tokens_mask=True, verbose=False)
    rows = [{key: values[i] for key, values in encoded.items()} for i in range(len(texts))]
    if truncation == "head_tail":
        rows = [head_and_tail(row, row.pop("special_tokens_mask"), max_length) for row in rows]
    return rows


def encode(tokenizer, texts: list[str], max_length: int, truncation: str = "head"):
    """`texts` tokenized, cut to `max_length` tokens by `truncation` and padded to the longest, as tensors."""
    if truncation == "head":  # the tokenizer cuts and pads in one call
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return tokenizer.pad(token_rows(tokenizer, texts, max_length, truncation), padding=True, return_tensors="pt")


def length_batches(tokenizer, texts: list[str], batch_size: int, max_length: int,
                   device: torch.device, truncation: str = "head") -> Iterator[tuple[np.ndarray, dict]]:
    """Batches of `texts` in length order (short texts together, so padding stays short), each tokenized,
    cut by `truncation`, padded to its own longest text and moved to `device`, with the positions of its rows
    in `texts`."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
        cores.refresh()
        index = order[start : start + batch_size]
        batch = encode(tokenizer, [texts[i] for i in index], max_length, truncation).to(device)
        yield index, batch
