"""Fine-tune mechanics on a tiny random BERT: what trains, what stays frozen, what is saved, and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.config import FinetuneParams
from tasks.errors import ParamsError
from tasks.finetune import build_model, finetune, train_model
from tasks.model import Classifier, backbone_path, resolve_device
from tests.conftest import cfpb_sample

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the CPU-only behaviour")


@pytest.fixture(scope="module")
def train():
    frame = cfpb_sample(per_class=6)  # 4 classes x 6 real complaints
    return frame.rename(columns={"issue": "label"})[["text", "label"]]


@pytest.fixture(scope="module")
def cfg(tiny_backbone):
    return FinetuneParams(backbone=str(tiny_backbone), epochs=2, batch_size=8, max_length=32, learning_rate=5e-3)


@pytest.fixture(scope="module")
def trained(train, cfg, tmp_path_factory):
    return finetune(train, cfg, seed=11, out_dir=tmp_path_factory.mktemp("finetune"))


def test_the_saved_model_loads_and_predicts_only_known_labels(trained, train):
    classifier = Classifier(trained.model_dir, batch_size=5)
    assert classifier.labels == sorted(train["label"].unique()) == trained.labels
    assert classifier.max_length == 32
    texts = train["text"].tolist()[:7] + ["", "I was charged a late fee twice"]
    predicted = classifier.predict(texts)
    assert len(predicted) == 9 and set(predicted) <= set(trained.labels)
    probs = classifier.predict_proba(texts)
    assert probs.shape == (9, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_the_result_reports_losses_device_and_a_training_log(trained):
    assert trained.device == "cpu/fp32" or trained.device.startswith("cuda/")
    assert len(trained.losses) == 2 and np.isfinite(trained.losses).all()
    assert trained.samples_per_second > 0
    log = json.loads((trained.model_dir.parent / "training.json").read_text())
    assert log["model_dir"] == str(trained.model_dir) and log["losses"] == trained.losses


def test_the_saved_model_is_a_plain_classifier_without_adapters(trained):
    from safetensors.torch import load_file

    weights = load_file(trained.model_dir / "model.safetensors")
    assert not any("lora_" in name or "modules_to_save" in name for name in weights)
    assert weights["classifier.weight"].shape == (4, 32)


def test_with_lora_only_adapters_and_the_head_are_trainable(cfg):
    model = build_model(cfg, ["a", "b", "c"])
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in name or ".classifier." in name for name in trainable)
    assert sum("lora_A" in name for name in trainable) == 4  # query and value in each of 2 layers
    assert sum("lora_B" in name for name in trainable) == 4
    assert sorted(name for name in trainable if ".classifier." in name) == [
        "base_model.model.classifier.modules_to_save.default.bias",
        "base_model.model.classifier.modules_to_save.default.weight",
    ]


@pytest.fixture(scope="module")
def before_and_after(cfg, train, tiny_backbone):
    from transformers import AutoTokenizer

    labels = sorted(train["label"].unique())
    torch.manual_seed(0)
    model = build_model(cfg, labels)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    targets = [labels.index(label) for label in train["label"]]
    losses = train_model(model, tokenizer, train["text"].tolist(), targets, cfg, resolve_device("cpu"), seed=0)
    after = {name: p.detach().clone() for name, p in model.named_parameters()}
    return before, after, losses


def test_training_leaves_the_frozen_backbone_unchanged(before_and_after):
    before, after, _ = before_and_after
    frozen = [name for name in before if "lora_" not in name and "modules_to_save" not in name]
    assert any("encoder.layer.0.attention.self.query.base_layer.weight" in name for name in frozen)
    assert all(torch.equal(before[name], after[name]) for name in frozen)


def test_training_changes_the_head_and_the_adapters(before_and_after):
    before, after, losses = before_and_after
    head = "base_model.model.classifier.modules_to_save.default.weight"
    assert not torch.equal(before[head], after[head])
    lora_b = [name for name in before if "lora_B" in name]
    assert all(torch.count_nonzero(before[name]) == 0 for name in lora_b)  # LoRA starts as a no-op
    assert all(torch.count_nonzero(after[name]) > 0 for name in lora_b)
    assert len(losses) == 2 and np.isfinite(losses).all()


def test_the_same_seed_gives_identical_probabilities(train, cfg, tmp_path):
    texts = train["text"].tolist()
    first = Classifier(finetune(train, cfg, seed=3, out_dir=tmp_path / "a").model_dir).predict_proba(texts)
    second = Classifier(finetune(train, cfg, seed=3, out_dir=tmp_path / "b").model_dir).predict_proba(texts)
    other = Classifier(finetune(train, cfg, seed=4, out_dir=tmp_path / "c").model_dir).predict_proba(texts)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


@no_cuda
def test_auto_device_on_this_machine_is_cpu_fp32():
    device = resolve_device("auto")
    assert device.device == torch.device("cpu") and device.autocast_dtype is None
    assert device.name == "cpu/fp32"


def test_cpu_device_is_cpu_fp32():
    assert resolve_device("cpu").name == "cpu/fp32"


@no_cuda
def test_cuda_device_without_cuda_is_a_params_error():
    with pytest.raises(ParamsError, match=r"finetune\.device = 'cuda' but no CUDA device is visible"):
        resolve_device("cuda")


def test_a_bad_lora_target_module_is_a_params_error(tiny_backbone):
    cfg = FinetuneParams(backbone=str(tiny_backbone), lora_target_modules=["q_proj"])
    with pytest.raises(ParamsError) as caught:
        build_model(cfg, ["a", "b"])
    message = str(caught.value)
    assert message.startswith("finetune.lora_target_modules = ['q_proj']: ")
    assert "target_modules" in message and "\n" not in message


def test_backbone_path_of_a_missing_folder_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match=r"finetune\.backbone = '.*/no-such-model': no such folder"):
        backbone_path(str(tmp_path / "no-such-model"))
    with pytest.raises(ParamsError, match=r"finetune\.backbone = './models/absent'"):
        backbone_path("./models/absent")


def test_backbone_path_of_a_hub_name_offline_is_a_params_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ParamsError, match=r"finetune\.backbone = 'someone/some-model': no such folder"):
        backbone_path("someone/some-model")


def test_backbone_path_of_a_folder_and_of_the_packaged_model(tiny_backbone):
    assert backbone_path(str(tiny_backbone)) == str(tiny_backbone)
    packaged = backbone_path("minilm")
    assert json.loads((Path(packaged) / "config.json").read_text())["num_hidden_layers"] == 6
