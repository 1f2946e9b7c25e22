"""The classifier itself: where the backbone comes from, which device runs it, the network (backbone, mean
pooling, a new head), how it is saved, and batch prediction that loads each base backbone once."""

from __future__ import annotations

import functools
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks import cores
from tasks.backbone import PACKAGED_BACKBONE, backbone_path  # noqa: F401 - callers import them from here
from tasks.errors import ModelLoadError, ParamsError
from tasks.inference import length_batches, mean_pool  # noqa: F401 - callers import mean_pool from here

MODEL_CARD = "nichetune.json"  # labels, max length, strategy, and which base backbone the model builds on
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"  # a whole backbone, when the strategy changed its weights (freeze, gradual, full)
ADAPTER_DIR = "adapter"  # peft adapter weights only (lora, ia3): small, on top of the shared base
BASE_DIR = "base"  # a base backbone kept inside the model folder (one adapted on unlabeled texts, see tasks.adapt)


@dataclass(frozen=True)
class Device:
    """Device and precision, resolved in one place for training and prediction."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 where the hardware runs it fast (resolve_device); None: plain fp32

    @property
    def name(self) -> str:
        return f"{self.device.type}/{self.precision}"

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype is torch.bfloat16 else "fp32"

    def autocast(self):
        """A context that runs the forward pass in the resolved precision."""
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)


# fp32: this process never runs bf16, whatever the hardware (training and prediction alike); auto: as below
PRECISION_ENV = "NICHETUNE_PRECISION"
PRECISIONS = ("auto", "fp32")


def cpu_bf16_unit() -> str | None:
    """The unit with which this CPU multiplies bf16 matrices in hardware: "amx" (Intel Xeon 4th generation on),
    "avx512_bf16" (AMD Zen 4 on, Intel Cooper Lake), or None, where bf16 is emulated and slower than fp32. With
    AMX a bf16 product of MiniLM's sizes ran 8x fp32's, fine-tuning 1.1x to 1.2x and prediction 1.6x to 2.1x;
    with AVX-512 BF16 alone (an AMD Zen 4) fine-tuning 1.4x and prediction 1.6x to 1.7x (BENCHMARKS.md, "bf16 on
    the CPU"), the same dev scores within noise either way. torch names these probes privately: without them, None."""
    probes = {name: getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("amx_tile", "avx512_bf16")}
    try:
        found = {name for name, probe in probes.items() if probe is not None and probe()}
    except RuntimeError:
        return None
    if "avx512_bf16" not in found:
        return None
    return "amx" if "amx_tile" in found else "avx512_bf16"


def cpu_runs_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (cpu_bf16_unit), where bf16 autocast pays."""
    return cpu_bf16_unit() is not None


def resolve_device(preference: str = "auto", precision: str = "auto") -> Device:
    """CUDA when present (or asked for), else the CPU with this process's share of its cores; bf16 autocast
    where the hardware runs it fast (CUDA with bf16, a CPU with AMX or AVX-512 BF16), unless `precision` or NICHETUNE_PRECISION
    says fp32."""
    chosen = os.environ.get(PRECISION_ENV, "auto")
    if chosen not in PRECISIONS:
        raise ParamsError(f"{PRECISION_ENV}={chosen!r}: use {' or '.join(PRECISIONS)} (or leave it unset)")
    fast = precision != "fp32" and chosen != "fp32"
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if fast and torch.cuda.is_bf16_supported() else None
        return Device(torch.device("cuda"), dtype)
    if preference == "cuda":
        raise ParamsError("finetune.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    torch.set_num_threads(cores.share())
    return Device(torch.device("cpu"), torch.bfloat16 if fast and cpu_runs_bf16() else None)


def for_prediction(module: torch.nn.Module, device: Device) -> torch.nn.Module:
    """`module` in eval mode, its matrix products' weights cast to bf16 once where a CPU predicts in bf16. Autocast
    would cast the same weights to the same bf16 on every call, and on a single text that took longer than the
    products themselves. Embeddings and LayerNorms stay fp32, as autocast keeps them."""
    module.eval()
    if device.device.type == "cpu" and device.autocast_dtype is torch.bfloat16:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.to(torch.bfloat16)
    return module


def load_encoder(path: str):
    """A pretrained backbone without any head, in fp32 (transformers 5 otherwise keeps the checkpoint dtype)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, dtype=torch.float32)


def token_limit(tokenizer, config) -> int | None:
    """The most tokens the backbone takes: its tokenizer's model_max_length (when set; unset is a huge
    sentinel) and its position embeddings, whichever is smaller; None if neither says."""
    limits = [value for value in (getattr(tokenizer, "model_max_length", None),
                                  getattr(config, "max_position_embeddings", None))
              if isinstance(value, int) and value < 1_000_000]
    return min(limits) if limits else None


class SentenceClassifier(torch.nn.Module):
    """Backbone, masked mean pooling, dropout and a new linear head. The upper part of the network can run
    from cached outputs of a lower layer (`embed_from`), which is what makes frozen layers cheap."""

    def __init__(self, encoder, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def bert(self):
        """The backbone's own modules (under a peft wrapper when adapters are attached)."""
        return self.encoder.get_base_model() if hasattr(self.encoder, "get_base_model") else self.encoder

    @property
    def depth(self) -> int:
        return len(self.bert.encoder.layer)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(pooled))

    def forward(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        return self.classify(self.embed(input_ids, attention_mask, **inputs))

    def embed(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        """The sentence vectors the head reads (mean-pooled last hidden state)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def hidden_at(self, layer: int, input_ids, attention_mask, **inputs) -> torch.Tensor:
        """The output of encoder layer `layer` (0: the embeddings), as the full forward pass computes it."""
        bert = self.bert
        hidden = bert.embeddings(input_ids=input_ids, token_type_ids=inputs.get("token_type_ids"))
        return self._run_layers(hidden, attention_mask, 0, layer)

    def embed_from(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """Sentence vectors from the output of encoder layer `layer`: only the layers above it run."""
        return mean_pool(self._run_layers(hidden, attention_mask, layer, self.depth), attention_mask)

    def _run_layers(self, hidden, attention_mask, start: int, stop: int) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        bert = self.bert
        if start == stop:
            return hidden
        # the mask in the form this attention implementation wants, as the encoder's own forward makes it
        mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for block in bert.encoder.layer[start:stop]:
            hidden = block(hidden, attention_mask=mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden


# ---------------------------------------------------------------- saving and loading


def _load_head(path: Path, hidden_size: int, num_labels: int) -> torch.nn.Linear:
    """The classification head saved beside the card; its shape must match the card's labels."""
    from safetensors.torch import load_file

    head = torch.nn.Linear(hidden_size, num_labels)
    with loading(path, "the classification head"):
        head.load_state_dict(load_file(path))
    return head


def save_classifier(model: SentenceClassifier, tokenizer, out: Path, card: dict) -> None:
    """Write the head, the tokenizer, the model card and, depending on `card['encoder']`, nothing more (the
    base backbone unchanged), the adapter weights alone, or the whole changed backbone."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, out / HEAD_FILE)
    if card["encoder"] == ADAPTER_DIR:
        model.encoder.save_pretrained(out / ADAPTER_DIR)
    elif card["encoder"] == ENCODER_DIR:
        model.bert.save_pretrained(out / ENCODER_DIR)
    tokenizer.save_pretrained(out)
    (out / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")


class SharedBase:
    """One base backbone in memory, shared by every loaded model built on it: models that only add a head
    use it as it is, adapter models switch to their own adapter (peft's multi-adapter model) under a lock."""

    def __init__(self, path: str, device: Device):
        self.encoder = for_prediction(load_encoder(path).to(device.device), device)
        self.peft = None  # the peft wrapper, once the first adapter is loaded
        self.lock = threading.Lock()

    def add_adapter(self, folder: Path, name: str) -> None:
        from peft import PeftModel

        with self.lock:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.encoder, str(folder), adapter_name=name).eval()
            elif name not in self.peft.peft_config:
                self.peft.load_adapter(str(folder), adapter_name=name)

    def hidden(self, adapter: str | None, batch) -> torch.Tensor:
        """The last hidden state with `adapter` active (None: the base weights alone)."""
        with self.lock:
            if self.peft is None:
                return self.encoder(**batch).last_hidden_state
            if adapter is None:
                with self.peft.disable_adapter():
                    return self.peft(**batch).last_hidden_state
            self.peft.set_adapter(adapter)
            return self.peft(**batch).last_hidden_state


_BASES: dict[tuple, SharedBase] = {}  # (path, device, adapter kind) -> the loaded base, in loading order


def shared_base(path: str, device_name: str, adapter_kind: str | None = None) -> SharedBase:
    """The base backbone at `path`, loaded once per process, device and kind of adapter: peft cannot mix
    adapter kinds (LoRA, IA3) in one model, so each kind has its own copy; head-only models reuse any."""
    if adapter_kind is None:
        for key, base in _BASES.items():
            if key[:2] == (path, device_name):
                return base
    key = (path, device_name, adapter_kind)
    if key not in _BASES:
        kind, precision = device_name.split("/")
        _BASES[key] = SharedBase(path, resolve_device(kind, "fp32" if precision == "fp32" else "auto"))
    return _BASES[key]


@torch.inference_mode()
def sentence_vectors(base: str, texts: list[str], device: Device, batch_size: int = 64, max_length: int = 512,
                     truncation: str = "head") -> np.ndarray:
    """Mean-pooled sentence vectors of the base backbone at `base` (shared with every model built on it)."""
    tokenizer = _base_tokenizer(base)
    encoder = shared_base(base, device.name)
    vectors = np.zeros((len(texts), encoder.encoder.config.hidden_size), dtype=np.float32)
    for index, batch in length_batches(tokenizer, texts, batch_size, max_length, device.device, truncation):
        with device.autocast():
            vectors[index] = mean_pool(encoder.hidden(None, batch), batch["attention_mask"]).float().cpu().numpy()
    return vectors


@functools.lru_cache(maxsize=4)
def _base_tokenizer(base: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


def forget_bases() -> None:
    """Drop every loaded base (the next Classifier loads its own)."""
    _BASES.clear()


def base_folder(model_dir: Path, base: str) -> str:
    """The backbone a model card's "base" names: a folder inside the model folder when it is a relative path to
    one (a copied adapted backbone; relative to the card, so the model folder can move), else as
    `backbone_path` finds it. The same folder reached from two cards gives the same string, so one copy of it
    is shared."""
    inside = Path(model_dir) / base
    if not Path(base).is_absolute() and (inside / "config.json").is_file():
        return str(inside.resolve())
    return backbone_path(base)


CARD_KEYS = ("labels", "max_length", "strategy", "base", "hidden_size", "encoder", "fingerprint")


@contextmanager
def loading(path: Path, what: str):
    """Any failure to read `path` (missing, truncated, not what it should be) becomes one ModelLoadError
    naming it: the same files would fail the same way on a retry."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - json, safetensors, transformers and peft each raise their own
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ModelLoadError(f"{path}: {what} cannot be loaded ({reason}); the model folder is damaged or "
                             "incomplete: train the model again or restore the folder from the registry") from None


def read_card(model_dir: Path) -> dict:
    """The model card of a saved classifier, with every key the loader needs."""
    card_path = model_dir / MODEL_CARD
    if not card_path.is_file():
        raise ModelLoadError(f"{model_dir}: not a nichetune model ({MODEL_CARD} missing); train one first")
    with loading(card_path, "the model card"):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        missing = [key for key in CARD_KEYS if key not in card]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        card["labels"], card["max_length"] = list(card["labels"]), int(card["max_length"])
    return card


class Classifier:
    """A fine-tuned classifier saved by `save_classifier`; predicts class probabilities in batches. Models
    built on the same base backbone (head-only and adapter models) share one copy of its weights. A missing
    or corrupt file raises ModelLoadError naming it."""

    def __init__(self, model_dir: Path | str, device: Device | None = None, batch_size: int = 64):
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        card = read_card(model_dir)
        self.device = device or resolve_device("auto")
        self.batch_size = batch_size
        self.labels: list[str] = card["labels"]
        self.max_length = card["max_length"]
        self.strategy = card["strategy"]
        self.base_name = card["base"]
        self.model_dir = model_dir
        self.truncation = card.get("truncation", "head")  # models saved before the key existed cut the head
        self.temperature = float(card.get("temperature", 1.0))  # fitted on validation rows; 1.0: uncalibrated
        with loading(model_dir, "the tokenizer"):
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.head = _load_head(model_dir / HEAD_FILE, int(card["hidden_size"]), len(self.labels))
        self.head.to(self.device.device).eval()
        self.adapter = None
        self.own_encoder = self.base = None
        if card["encoder"] == ENCODER_DIR:  # its own backbone: nothing to share
            with loading(model_dir / ENCODER_DIR, "the fine-tuned backbone"):
                self.own_encoder = load_encoder(str(model_dir / ENCODER_DIR))
            for_prediction(self.own_encoder.to(self.device.device), self.device)
            return
        try:
            base = base_folder(model_dir, card["base"])
        except ParamsError:
            raise ModelLoadError(f"{model_dir / MODEL_CARD}: the model builds on backbone {card['base']!r}, which "
                                 "is not on this machine; copy that folder back or train the model again") from None
        kind = card["strategy"] if card["encoder"] == ADAPTER_DIR else None
        with loading(Path(base), "the base backbone"):
            self.base = shared_base(base, self.device.name, kind)
        if kind is not None:
            self.adapter = f"{card['strategy']}-{card['fingerprint']}"
            with loading(model_dir / ADAPTER_DIR, "the adapter"):
                self.base.add_adapter(model_dir / ADAPTER_DIR, self.adapter)

    def _hidden(self, batch) -> torch.Tensor:
        if self.own_encoder is not None:
            return self.own_encoder(**batch).last_hidden_state
        return self.base.hidden(self.adapter, batch)

    def _batches(self, texts: list[str]):
        return length_batches(self.tokenizer, texts, self.batch_size, self.max_length, self.device.device,
                              self.truncation)

    @torch.inference_mode()
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities, one row per text; texts are batched by length so that padding stays short."""
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for index, batch in self._batches(texts):
            with self.device.autocast():
                pooled = mean_pool(self._hidden(batch), batch["attention_mask"])
                logits = self.head(pooled.to(self.head.weight.dtype))
            probs[index] = torch.softmax(logits.float() / self.temperature, dim=-1).cpu().numpy()
        return probs

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        """Sentence vectors of the base backbone, untouched by this model's training (no adapter, no changed
        layers): the space in which embedding drift is measured, the same for every model on that base."""
        base = shared_base(base_folder(self.model_dir, self.base_name), self.device.name)
        vectors = np.zeros((len(texts), base.encoder.config.hidden_size), dtype=np.float32)
        for index, batch in self._batches(texts):
            with self.device.autocast():
                vectors[index] = mean_pool(base.hidden(None, batch), batch["attention_mask"]).float().cpu().numpy()
        return vectors

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label for each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]
