"""Precision: bf16 autocast where the hardware runs it fast, fp32 where asked, and what must stay fp32 whatever
the machine (the ONNX export's parity reference). The rest of the suite runs in fp32 (tests/conftest.py); here
the CPU is taken to have bf16 units, so the bf16 path runs on any CPU (emulated where it has none: slower, the same
numbers to bf16's precision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks import model as model_module
from tasks.config import FinetuneParams
from tasks.errors import ParamsError
from tasks.export import export_model
from tasks.finetune import finetune
from tasks.model import PRECISION_ENV, Classifier, forget_bases, resolve_device
from tasks.suggest import vector_space
from tests.conftest import cfpb_sample


@pytest.fixture
def amx(monkeypatch):
    """This process on a CPU with bf16 units and no NICHETUNE_PRECISION: resolve_device's auto picks bf16."""
    monkeypatch.delenv(PRECISION_ENV)
    monkeypatch.setattr(model_module, "cpu_runs_bf16", lambda: True)
    forget_bases()
    yield
    forget_bases()


@pytest.fixture(scope="module")
def train():
    return cfpb_sample(per_class=6).rename(columns={"issue": "label"})[["text", "label"]]


def params(tiny_backbone, **values) -> FinetuneParams:
    defaults = dict(backbone=str(tiny_backbone), strategy="full", epochs=2, batch_size=8, max_length=32,
                    learning_rate=5e-3)
    return FinetuneParams(**{**defaults, **values})


def test_the_cpu_runs_bf16_only_where_it_has_the_units_and_fp32_is_not_asked_for(amx, monkeypatch):
    assert resolve_device("cpu").name == "cpu/bf16" and resolve_device("auto").autocast_dtype is torch.bfloat16
    assert resolve_device("cpu", "fp32").name == "cpu/fp32"
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_device("cpu").name == "cpu/fp32"
    monkeypatch.setenv(PRECISION_ENV, "fast")
    with pytest.raises(ParamsError, match=f"{PRECISION_ENV}='fast': use auto or fp32"):
        resolve_device("cpu")
    monkeypatch.delenv(PRECISION_ENV)
    monkeypatch.setattr(model_module, "cpu_runs_bf16", lambda: False)
    assert resolve_device("cpu").name == "cpu/fp32"


def test_the_hardware_probe_answers_on_any_cpu():
    assert isinstance(model_module.cpu_runs_bf16(), bool)
    assert model_module.cpu_bf16_unit() in ("amx", "avx512_bf16", None)


@pytest.mark.parametrize("amx_tile, avx512_bf16, unit", [(True, True, "amx"), (False, True, "avx512_bf16"),
                                                         (False, False, None), (True, False, None)])
def test_bf16_runs_on_amx_and_on_avx512_bf16_alone(amx_tile, avx512_bf16, unit, monkeypatch):
    """A Zen 4's AVX-512 BF16 multiplies bf16 in hardware as AMX does (BENCHMARKS.md, "bf16 on the CPU")."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx_tile)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert model_module.cpu_bf16_unit() == unit
    assert model_module.cpu_runs_bf16() is (unit is not None)


@pytest.mark.parametrize("strategy", ["full", "freeze", "head", "lora"])
def test_a_model_trained_in_bf16_predicts_as_in_fp32_to_bf16s_precision(amx, train, tiny_backbone, tmp_path,
                                                                         strategy):
    """Each way a strategy runs the backbone: all of it, from cached lower layers, from cached sentence vectors,
    through adapters."""
    cfg = params(tiny_backbone, strategy=strategy, freeze_layers=1, validation_fraction=0.25)
    result = finetune(train, cfg, seed=3, out_dir=tmp_path, work_dir=tmp_path / "work")  # work: the feature cache
    assert result.device == "cpu/bf16" and np.isfinite(result.losses).all()
    fp32 = finetune(train, cfg.model_copy(update={"precision": "fp32"}), seed=3, out_dir=tmp_path / "fp32",
                    work_dir=tmp_path / "work")
    assert fp32.device == "cpu/fp32" and not fp32.features_cached  # bf16's cached features are not fp32's
    texts = train["text"].tolist()
    fast, exact = Classifier(result.model_dir), Classifier(result.model_dir, resolve_device("cpu", "fp32"))
    assert fast.device.name == "cpu/bf16"
    np.testing.assert_allclose(fast.predict_proba(texts), exact.predict_proba(texts), atol=0.02)
    # each precision keeps its own suggestion vectors: the two differ in their last digits
    assert vector_space(fast) != vector_space(exact)


def test_the_export_checks_parity_against_fp32_where_prediction_runs_bf16(amx, train, tiny_backbone, tmp_path):
    result = finetune(train, params(tiny_backbone, precision="fp32"), seed=3, out_dir=tmp_path / "model")
    done = export_model(result.model_dir, tmp_path / "onnx", "none", train["text"].tolist())
    assert done.parity.agreement == 1.0 and done.parity.p99_diff < 1e-4, done.parity


def test_a_backbone_adapted_in_bf16_is_cached_apart_from_fp32s(tiny_backbone):
    """The same adapt settings train other weights in bf16: an fp32 run never reuses them, nor the reverse; fp32
    keeps the keys it had."""
    from tasks.adapt import cache_key
    from tasks.config import AdaptParams

    cfg = AdaptParams(objective="mlm", steps=10)
    fp32 = cache_key(str(tiny_backbone), "v1", cfg, 0)
    assert cache_key(str(tiny_backbone), "v1", cfg, 0, "bf16") != fp32
    assert cache_key(str(tiny_backbone), "v1", cfg, 0, "fp32") == fp32


@pytest.mark.parametrize("strategy", ["full", "head"])
def test_a_model_predicting_in_bf16_keeps_its_matrix_weights_in_bf16_and_predicts_as_autocast_alone(
        amx, train, tiny_backbone, tmp_path, strategy, monkeypatch):
    """Its own backbone (full) and a shared base (head) alike: the weights cast once at loading, not on each call;
    fp32's copy of the same base, the export's reference, stays fp32 beside it."""
    result = finetune(train, params(tiny_backbone, strategy=strategy), seed=3, out_dir=tmp_path)
    texts = train["text"].tolist()
    fast, exact = Classifier(result.model_dir), Classifier(result.model_dir, resolve_device("cpu", "fp32"))

    def matrices(classifier) -> set:
        encoder = classifier.own_encoder if classifier.own_encoder is not None else classifier.base.encoder
        return {m.weight.dtype for m in encoder.modules() if isinstance(m, torch.nn.Linear)}

    assert matrices(fast) == {torch.bfloat16} and matrices(exact) == {torch.float32}
    cast_once = fast.predict_proba(texts)
    monkeypatch.setattr(model_module, "for_prediction", lambda module, device: module.eval())
    forget_bases()
    autocast_alone = Classifier(result.model_dir).predict_proba(texts)
    np.testing.assert_allclose(cast_once, autocast_alone, atol=1e-3)
