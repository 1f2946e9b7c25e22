"""finetune.gradient_checkpointing: recomputing layer activations in the backward pass gives the same training
(losses and weights) for less memory, and `auto` turns it on only where a batch can hold many tokens."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tasks import training
from tasks.config import FinetuneParams
from tasks.finetune import finetune
from tests.conftest import cfpb_sample

pytestmark = pytest.mark.slow


def complaints(rows: int = 6) -> "object":
    """Real complaints, most longer than the tiny backbone reads: every batch is full."""
    return cfpb_sample(per_class=rows).rename(columns={"issue": "label"})[["text", "label"]]


@pytest.mark.parametrize("strategy", ["full", "lora", "freeze"])
def test_checkpointing_trains_the_same_weights(tiny_backbone, tmp_path, strategy, monkeypatch):
    """The top layer's attention runs again in the backward pass (more calls: transformers checkpoints a layer's
    forward, so hooks on the layer itself run once), and the losses and weights match."""
    calls = []
    build = training.build_model

    def counted(cfg, labels):
        model = build(cfg, labels)
        model.bert.encoder.layer[-1].attention.register_forward_pre_hook(lambda *_: calls.append(cfg.gradient_checkpointing))
        return model

    monkeypatch.setattr(training, "build_model", counted)
    runs = {}
    for setting in ("never", "always"):
        cfg = FinetuneParams(backbone=str(tiny_backbone), strategy=strategy, epochs=2, batch_size=8, max_length=64,
                             freeze_layers=1, dropout=0.1, gradient_checkpointing=setting)
        result = finetune(complaints(), cfg, seed=0, out_dir=tmp_path / setting)
        runs[setting] = result.losses, load_file(result.model_dir / "head.safetensors")["weight"]
    assert calls.count("always") > calls.count("never") > 0
    assert runs["never"][0] == pytest.approx(runs["always"][0], rel=1e-5)
    assert torch.allclose(runs["never"][1], runs["always"][1], atol=1e-5)


def test_auto_checkpoints_only_batches_of_many_tokens_on_the_cpu(tiny_backbone, monkeypatch):
    train = complaints()
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="full", batch_size=8, max_length=64)
    setup = training.prepare(train, cfg, seed=0)
    rows, _ = training.split_rows(train, setup.cfg, setup.labels, 0)
    training.precompute(setup, [rows], None)
    assert int(rows.lengths.max()) == 64  # long complaints, cut to max_length
    monkeypatch.setattr(training, "CHECKPOINT_TOKENS", 8 * 64)  # a batch of the longest rows is exactly this
    assert not training.checkpoint_layers(setup, rows)
    monkeypatch.setattr(training, "CHECKPOINT_TOKENS", 8 * 64 - 1)
    assert training.checkpoint_layers(setup, rows)
    assert all(layer.gradient_checkpointing for layer in setup.model.bert.encoder.layer)
    head_only = training.prepare(train, cfg.model_copy(update={"strategy": "head"}), seed=0)
    assert not training.checkpoint_layers(head_only, rows)  # nothing in the backbone trains
