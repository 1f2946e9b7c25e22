"""Domain-adaptive pretraining: the backbone trained further on the dataset's texts, without their labels, before
any strategy starts from it, with one of three objectives (`adapt.objective`):

- mlm: masked-language modelling, BERT's own pretraining task, on the domain's words;
- tsdae: a denoising auto-encoder (sentence-transformers' DenoisingAutoEncoderLoss): the sentence vector of a text
  with most words deleted must let a decoder rebuild the whole text;
- simcse: dropout contrast (MultipleNegativesRankingLoss on each text paired with itself): the two dropout views of
  a text must be closer than any other text of the batch.

The texts are the corpus tasks.finetune.Unlabeled.corpus gives: the unlabeled pool and, by default, the training
rows' texts (never a holdout text). The result is an ordinary model folder (config, weights, tokenizer) of the
backbone's architecture, cached under <cache>/adapted/<key> per backbone, corpus, adapt settings and seed. A model
trained from it keeps a copy (`embed_base`), so a registered model never depends on the cache."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.config import AdaptParams
from tasks.errors import DataError
from tasks.model import BASE_DIR, MODEL_CARD, Device, backbone_path, load_encoder
from tasks.progress import bar, say
from tasks.runtime import seed_everything

ADAPTED_DIR = "adapted"  # under the cache root: one folder per cache key
PROVENANCE_FILE = "nichetune-adapt.json"  # inside an adapted folder: how it was made; written last
FORMAT = 1  # part of the cache key: a change in how adaptation trains must not reuse folders made the old way
WARMUP = 0.1  # share of the steps the learning rate ramps up over, then it decays linearly to 0
TSDAE_DELETE = 0.6  # share of words deleted from the encoder's input (the TSDAE paper's best setting)
PROGRESS_LINES = 10  # printed lines over a run, for the Prefect UI where no bar shows


@dataclass(frozen=True)
class Adapted:
    """An adapted backbone: a folder any strategy loads as `finetune.backbone`, and how it was made."""

    path: Path
    provenance: dict  # objective, steps, texts, seconds, path, cached, corpus_version, key, losses...


@dataclass
class Objective:
    """One adaptation objective, ready to train: every trainable module, the loss of a batch of texts, and the
    backbone inside them whose weights are saved at the end."""

    model: torch.nn.Module
    loss: Callable[[list[str]], torch.Tensor]
    encoder: torch.nn.Module


def adapted_backbone(texts: list[str], corpus_version: str, cfg: AdaptParams, backbone: str, seed: int,
                     cache_root: Path, device: Device) -> Adapted:
    """The backbone trained `cfg.steps` steps of `cfg.objective` on at most `cfg.max_texts` of `texts` (sampled
    with `seed`); from the cache when the same backbone, corpus version, settings and seed were adapted before.
    Objective none returns the backbone unchanged, with empty provenance."""
    base = backbone_path(backbone)
    if cfg.objective == "none":
        return Adapted(Path(base), {})
    texts = [text for text in texts if isinstance(text, str) and text.strip()]
    if not texts:
        raise DataError(f"adapt.objective = {cfg.objective!r} but the corpus {corpus_version!r} holds no texts; "
                        "add some with `nichetune ingest FILE --unlabeled` or set adapt.objective: none")
    key = cache_key(base, corpus_version, cfg, seed, device.precision)
    folder = Path(cache_root) / ADAPTED_DIR / key
    if (folder / PROVENANCE_FILE).is_file():
        say(f"adapt {cfg.objective}: reusing the backbone adapted on corpus {corpus_version} ({folder})")
        return Adapted(folder, {**json.loads((folder / PROVENANCE_FILE).read_text()), "cached": True})
    sample = sample_texts(texts, cfg.max_texts, seed)
    about = {"objective": cfg.objective, "steps": cfg.steps, "texts": len(sample), "corpus_texts": len(texts),
             "corpus_version": corpus_version, "backbone": backbone, "seed": seed, "key": key, "path": str(folder)}
    return Adapted(folder, {**train_and_save(base, sample, cfg, seed, device, folder, about), "cached": False})


def cache_key(base: str, corpus_version: str, cfg: AdaptParams, seed: int, precision: str = "fp32") -> str:
    """What decides the adapted weights: the backbone (its path, config and weight files' size and time), the
    corpus version, every adapt setting, the seed and the precision it trains in (bf16 where the machine runs
    it fast: the same settings adapt to other weights there)."""
    folder = Path(base)
    config = (folder / "config.json").read_text() if (folder / "config.json").is_file() else ""
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.safetensors")) \
        if folder.is_dir() else []
    payload = {"format": FORMAT, "backbone": base, "config": config, "weights": weights,
               "corpus_version": corpus_version, "adapt": cfg.model_dump(), "seed": seed}
    if precision != "fp32":  # fp32 keeps the keys its folders were cached under
        payload["precision"] = precision
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def sample_texts(texts: list[str], limit: int, seed: int) -> list[str]:
    """At most `limit` of `texts`, drawn with `seed`, in their order."""
    if len(texts) <= limit:
        return list(texts)
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in keep]


def train_and_save(base: str, texts: list[str], cfg: AdaptParams, seed: int, device: Device, folder: Path,
                   about: dict) -> dict:
    """Train, then write the adapted backbone with its provenance (`about` and what the run did) to a temporary
    folder beside `folder` and rename it into place, so that a killed run never leaves a half-written folder
    under the cache key. Returns the provenance."""
    seed_everything(seed)
    started = time.perf_counter()
    objective = OBJECTIVES[cfg.objective](base, cfg, seed, device)
    losses = train_steps(objective, texts, cfg, seed, device)
    seconds = time.perf_counter() - started
    tenth = max(1, len(losses) // 10)
    record = {**about, "seconds": round(seconds, 1), "steps_per_second": round(cfg.steps / seconds, 3),
              "loss_start": round(float(np.mean(losses[:tenth])), 4),
              "loss_end": round(float(np.mean(losses[-tenth:])), 4), "device": device.name}
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        save_backbone(objective.encoder, base, temporary)
        (temporary / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if folder.exists():  # another run of the same key finished first: its folder is as good as this one
            shutil.rmtree(temporary)
        else:
            os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    say(f"adapt {cfg.objective}: {cfg.steps} steps in {seconds:.0f} s, loss {record['loss_start']:.3f} -> "
        f"{record['loss_end']:.3f}; saved to {folder}")
    return record


def save_backbone(trained: torch.nn.Module, base: str, out: Path) -> None:
    """The trained backbone's weights in a fresh copy of the base architecture (so it loads with AutoModel like
    the original, pooler included: the objectives' wrappers may drop it), with the base tokenizer."""
    from transformers import AutoTokenizer

    encoder = load_encoder(base)
    state = {name: tensor.detach().cpu() for name, tensor in trained.state_dict().items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or len(missing) >= len(state):
        raise RuntimeError(f"the adapted weights do not fit the backbone {base} (unexpected {unexpected[:3]}, "
                           f"missing {missing[:3]})")
    encoder.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


# ---------------------------------------------------------------- the training loop


def batch_stream(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """`steps` batches of text positions: seeded shuffles of all texts, one after another."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, count)
    order: list[int] = []
    while len(order) < steps * size:
        order += torch.randperm(count, generator=generator).tolist()
    return [order[i * size : (i + 1) * size] for i in range(steps)]


def train_steps(objective: Objective, texts: list[str], cfg: AdaptParams, seed: int, device: Device) -> list[float]:
    """AdamW over every trainable weight for `cfg.steps` steps, warmup then linear decay; the loss per step."""
    from transformers import get_scheduler

    objective.model.to(device.device).train()
    weights = [p for p in objective.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(weights, lr=cfg.learning_rate, fused=True)  # as training's (FUSED_ADAMW)
    schedule = get_scheduler("linear", optimizer, num_warmup_steps=int(WARMUP * cfg.steps),
                             num_training_steps=cfg.steps)
    losses: list[float] = []
    every = max(1, cfg.steps // PROGRESS_LINES)
    started = time.perf_counter()
    say(f"adapt {cfg.objective}: {cfg.steps} steps of {min(cfg.batch_size, len(texts))} texts, from "
        f"{len(texts)} texts without their labels, on {device.name}")
    with bar(cfg.steps, f"adapt {cfg.objective}", "step") as progress:
        for step, batch in enumerate(batch_stream(len(texts), cfg.batch_size, cfg.steps, seed), start=1):
            with device.autocast():
                loss = objective.loss([texts[i] for i in batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(weights, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            progress.update(1)
            if step % every == 0 and step < cfg.steps:
                say(f"adapt {cfg.objective}: step {step}/{cfg.steps}, loss {np.mean(losses[-every:]):.4f}, "
                    f"{time.perf_counter() - started:.0f} s")
    return losses


# ---------------------------------------------------------------- the objectives


def masked_lm(base: str, cfg: AdaptParams, seed: int, device: Device) -> Objective:
    """BERT's masked-word task; the prediction head comes with the checkpoint when it has one, else it is new."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForMaskedLM.from_pretrained(base, dtype=torch.float32)
    # masks are drawn from torch's generator, seeded with the rest of the run
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mask_probability)

    def loss(texts: list[str]) -> torch.Tensor:
        rows = tokenizer(texts, truncation=True, max_length=cfg.max_length)
        batch = collator([{key: rows[key][i] for key in rows} for i in range(len(texts))])
        return model(**{key: value.to(device.device) for key, value in batch.items()}).loss

    return Objective(model, loss, model.base_model)


def sentence_model(base: str, cfg: AdaptParams, device: Device):
    """The backbone with mean pooling as sentence-transformers trains it: the sentence vector nichetune uses."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(base, max_seq_length=cfg.max_length, model_kwargs={"dtype": torch.float32})
    pooling = models.Pooling(transformer.get_embedding_dimension(), "mean")
    return SentenceTransformer(modules=[transformer, pooling], device=str(device.device))


def features(model, texts: list[str], device: Device) -> dict:
    """The model's inputs for `texts` on the device (tensors moved, markers such as the modality kept)."""
    return {key: value.to(device.device) if isinstance(value, torch.Tensor) else value
            for key, value in model.preprocess(texts).items()}


def tsdae(base: str, cfg: AdaptParams, seed: int, device: Device) -> Objective:
    """Denoising auto-encoder: a decoder tied to the encoder rebuilds each text from the vector of its damaged
    copy. The damage deletes words split on spaces (the library's own noise needs nltk data, absent offline)."""
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss

    model = sentence_model(base, cfg, device)
    criterion = DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
    rng = random.Random(seed)

    def loss(texts: list[str]) -> torch.Tensor:
        damaged = [delete_words(text, TSDAE_DELETE, rng) for text in texts]
        return criterion([features(model, damaged, device), features(model, texts, device)], None)

    return Objective(criterion, loss, model.transformers_model)


def delete_words(text: str, share: float, rng: random.Random) -> str:
    """`text` with each word deleted with probability `share`, keeping at least one."""
    words = text.split()
    kept = [word for word in words if rng.random() >= share]
    return " ".join(kept) if kept else (rng.choice(words) if words else text)


def simcse(base: str, cfg: AdaptParams, seed: int, device: Device) -> Objective:
    """Unsupervised SimCSE: each text against itself under another dropout mask, the batch's others as negatives."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = sentence_model(base, cfg, device)
    criterion = MultipleNegativesRankingLoss(model)

    def loss(texts: list[str]) -> torch.Tensor:
        batch = features(model, texts, device)
        return criterion([batch, dict(batch)], None)

    return Objective(criterion, loss, model.transformers_model)


OBJECTIVES: dict[str, Callable[[str, AdaptParams, int, Device], Objective]] = {
    "mlm": masked_lm, "tsdae": tsdae, "simcse": simcse}


# ---------------------------------------------------------------- a model trained from an adapted backbone


def embed_base(model_dir: Path, adapted_path: Path) -> None:
    """Copy the adapted backbone into `model_dir`/base and point every model card in the folder that builds on
    it (an auto model's members too) there, relative to the card: the model then loads wherever it is copied,
    with the adapter cache gone. Call it once the model is saved, before it is evaluated or registered."""
    model_dir, adapted = Path(model_dir), Path(adapted_path).resolve()
    cards = [card for card in sorted(model_dir.rglob(MODEL_CARD))
             if Path(json.loads(card.read_text())["base"]).resolve() == adapted]
    if not cards:
        raise ValueError(f"{model_dir}: no model card builds on {adapted}; was the model trained from it?")
    target = model_dir / BASE_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(adapted, target)
    for card_path in cards:
        card = json.loads(card_path.read_text())
        card["base"] = os.path.relpath(target, card_path.parent)
        card_path.write_text(json.dumps(card, indent=2) + "\n")
