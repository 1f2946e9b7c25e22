"""A saved model folder that is damaged (a truncated card, a missing head, lost weights) fails to load with one
line naming the file, as a ModelLoadError: final, never retried as if it were a passing fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tasks.config import FinetuneParams
from tasks.errors import ModelLoadError, NichetuneError
from tasks.finetune import finetune
from tasks.model import ADAPTER_DIR, BASE_DIR, ENCODER_DIR, HEAD_FILE, MODEL_CARD, Classifier, forget_bases
from tests.conftest import cfpb_sample

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


@pytest.fixture(scope="module")
def saved(tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    """A model folder per way of saving the backbone: none (head), an adapter (lora), a whole one (full)."""
    train = cfpb_sample(per_class=4, classes=2).rename(columns={"issue": "label"})[["text", "label"]]
    folders = {}
    for strategy in ("head", "lora", "full"):
        cfg = FinetuneParams(backbone=str(tiny_backbone), strategy=strategy, epochs=1, batch_size=8, max_length=32)
        folders[strategy] = finetune(train, cfg, seed=3, out_dir=tmp_path_factory.mktemp(strategy)).model_dir
    return folders


@pytest.fixture
def copy_of(saved, tmp_path):
    def copy(strategy: str) -> Path:
        forget_bases()  # an adapter already loaded under the same name would hide a damaged one
        return Path(shutil.copytree(saved[strategy], tmp_path / strategy))
    return copy


def load_error(folder: Path) -> str:
    with pytest.raises(ModelLoadError) as caught:
        Classifier(folder)
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, NichetuneError)
    return message


def test_an_intact_copy_loads(copy_of):
    assert Classifier(copy_of("head")).labels


def test_a_truncated_card_names_the_card(copy_of):
    folder = copy_of("head")
    card = folder / MODEL_CARD
    card.write_text(card.read_text()[:40])
    message = load_error(folder)
    assert message.startswith(f"{card}: the model card cannot be loaded (")
    assert "train the model again" in message


def test_a_card_missing_keys_names_them(copy_of):
    folder = copy_of("head")
    card = json.loads((folder / MODEL_CARD).read_text())
    del card["labels"], card["hidden_size"]
    (folder / MODEL_CARD).write_text(json.dumps(card))
    assert "(no labels, hidden_size)" in load_error(folder)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_head_names_the_head_file(copy_of, damage):
    folder = copy_of("head")
    head = folder / HEAD_FILE
    if damage == "missing":
        head.unlink()
    else:
        head.write_bytes(head.read_bytes()[:100])
    assert load_error(folder).startswith(f"{head}: the classification head cannot be loaded (")


def test_a_head_for_other_labels_names_the_head_file(copy_of):
    folder = copy_of("head")
    card = json.loads((folder / MODEL_CARD).read_text())
    (folder / MODEL_CARD).write_text(json.dumps({**card, "labels": card["labels"] + ["another"]}))
    assert load_error(folder).startswith(f"{folder / HEAD_FILE}: the classification head cannot be loaded")


def test_lost_backbone_weights_name_the_backbone_folder(copy_of):
    folder = copy_of("full")
    for weights in (folder / ENCODER_DIR).glob("*.safetensors"):
        weights.unlink()
    assert load_error(folder).startswith(f"{folder / ENCODER_DIR}: the fine-tuned backbone cannot be loaded (")


def test_a_missing_adapter_names_the_adapter_folder(copy_of):
    folder = copy_of("lora")
    shutil.rmtree(folder / ADAPTER_DIR)
    assert load_error(folder).startswith(f"{folder / ADAPTER_DIR}: the adapter cannot be loaded (")


def test_a_base_backbone_no_longer_here_names_the_card(copy_of, tmp_path):
    folder = copy_of("head")
    card = json.loads((folder / MODEL_CARD).read_text())
    (folder / MODEL_CARD).write_text(json.dumps({**card, "base": str(tmp_path / "gone")}))
    message = load_error(folder)
    assert message.startswith(f"{folder / MODEL_CARD}: the model builds on backbone ") and "gone" in message


def test_a_folder_that_is_not_a_model_is_a_model_load_error(tmp_path):
    assert "not a nichetune model (nichetune.json missing)" in load_error(tmp_path)


def test_a_base_kept_inside_the_model_folder_loads_and_its_loss_names_it(copy_of, tiny_backbone):
    from tasks.adapt import embed_base

    folder = copy_of("lora")
    probs = Classifier(folder).predict_proba(["my loan payment was taken twice"])
    embed_base(folder, tiny_backbone)  # as for an adapted backbone: the base travels with the model
    forget_bases()
    assert json.loads((folder / MODEL_CARD).read_text())["base"] == BASE_DIR
    assert Classifier(folder).predict_proba(["my loan payment was taken twice"]).tolist() == probs.tolist()
    forget_bases()
    for weights in (folder / BASE_DIR).glob("*.safetensors"):
        weights.unlink()
    assert load_error(folder).startswith(f"{(folder / BASE_DIR).resolve()}: the base backbone cannot be loaded (")
    forget_bases()
    shutil.rmtree(folder / BASE_DIR)
    assert load_error(folder).startswith(f"{folder / MODEL_CARD}: the model builds on backbone 'base', which is not")
