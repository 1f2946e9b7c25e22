"""The same seed gives the same weights, bit for bit, on one machine: the holdout metrics a run reports can be
reproduced by running it again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from tasks.config import FinetuneParams
from tasks.finetune import finetune
from tasks.training import pair_loss
from tasks.model import backbone_path
from tasks.runtime import seed_everything
from tests.conftest import cfpb_sample

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
WIDTH = 384  # MiniLM's width: at the tiny fixture's 32 the CPU kernels run on one thread and hide the problem


@pytest.fixture(autouse=True)
def restore_torch_determinism():
    """seed_everything switches torch to deterministic kernels for the process; other tests start as they were."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.fixture(scope="module")
def wide_backbone(tmp_path_factory):
    """One random BERT layer as wide as MiniLM, with its tokenizer: seconds to train, real kernel sizes."""
    folder = tmp_path_factory.mktemp("wide-bert")
    tokenizer = AutoTokenizer.from_pretrained(backbone_path("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=WIDTH, num_hidden_layers=1,
                        num_attention_heads=6, intermediate_size=WIDTH, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_after_seeding_the_pair_loss_gradient_is_the_same_every_time():
    seed_everything(0)
    vectors = torch.randn(16, WIDTH)
    targets = torch.randint(0, 4, (16,))
    gradients = set()
    for _ in range(20):
        leaf = vectors.clone().requires_grad_()
        pair_loss(leaf, targets).backward()
        gradients.add(leaf.grad.numpy().tobytes())
    assert len(gradients) == 1, f"{len(gradients)} different gradients from 20 passes over the same rows"


def test_the_same_seed_trains_the_same_weights_bit_for_bit(wide_backbone, tmp_path):
    train = cfpb_sample(per_class=8).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(wide_backbone), strategy="full", epochs=2, batch_size=16, max_length=48)
    first, second = (saved_weights(finetune(train, cfg, seed=7, out_dir=tmp_path / run).model_dir)
                     for run in ("first", "second"))
    assert first.keys() == second.keys() and any(name.startswith("encoder") for name in first)
    changed = [name for name in first if not torch.equal(first[name], second[name])]
    assert not changed, f"{len(changed)} of {len(first)} tensors differ, e.g. {changed[:3]}"


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor the saved model holds, named by its file's folder and its own name."""
    return {f"{path.parent.relative_to(model_dir)}/{name}": value
            for path in sorted(model_dir.rglob("*.safetensors")) for name, value in load_file(path).items()}
