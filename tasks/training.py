"""Training one strategy: adapt the pretrained backbone to the labels with one of the strategies in
`tasks.strategies` (`finetune.strategy`): what each trains, caches and saves is read from its entry there.

One loop serves all of them: seeded batch order per epoch, class weights or oversampling, label smoothing,
gradient accumulation, warmup and decay, early stopping on a validation share of the training rows, and a
checkpoint after every epoch from which a killed run resumes to the same result."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks import cores, privacy
from tasks import features as frozen
from tasks.augment import augment
from tasks.calibration import fit_temperature
from tasks.config import FinetuneParams
from tasks.errors import ParamsError
from tasks.inference import encode, token_rows
from tasks.layout import CACHE_DIR, CHECKPOINT_DIR, LOG_FILE, MODEL_DIR
from tasks.model import (ADAPTER_DIR, ENCODER_DIR, Device, SentenceClassifier, backbone_path, load_encoder,
                         resolve_device, save_classifier, token_limit)
from tasks.progress import bar, epoch_line, say
from tasks.runtime import seed_everything
from tasks.strategies import Strategy, strategy

# On the CPU a batch runs in pieces of at most this many padded tokens (rows x the piece's longest row), shortest
# rows first: there the cost grows with padded tokens (attention with their square), so a long complaint does
# not pad fifteen short ones to its length (BENCHMARKS.md has the speed-up); short texts fit one piece. A GPU runs
# the whole padded batch at once, in parallel, unless GPU_PIECE_TOKENS names a budget for it (`nichetune bench gpu
# --piece-tokens` measures budgets there; None until a lent GPU shows one that pays).
PIECE_TOKENS = 512
GPU_PIECE_TOKENS: int | None = None
# finetune.gradient_checkpointing auto: on the CPU, keep layer activations only for batches up to this many tokens
# (about 0.3 MB per token for MiniLM); more is recomputed in the backward pass
CHECKPOINT_TOKENS = 2048
# A checkpoint no run has written for this long belongs to a run given up on (killed, then its params or data changed,
# so no run has its fingerprint again): a finished run removes it, or killed runs fill the disk (270 MB for MiniLM)
STALE_CHECKPOINT_DAYS = 7
# a run's trained weights by parameter name (train_strategy's keep_weights), for a later run to start from
WEIGHTS_FILE = "trainable.pt"
# AdamW's fused kernel: one pass over each weight per step instead of one per operation. On 2 CPU cores the
# per-tensor update took a third of `full`'s training time (BENCHMARKS.md, "Training speed on the CPU"); on CUDA
# it is the fused optimizer of the GPU path
FUSED_ADAMW = True
PSEUDO = "_pseudo"  # a training frame's column that marks rows self-training labeled (tasks.selftrain)
# A run with a time limit times PROBE_SHARE of its first epoch's batches (at least PROBE_BATCHES) after the first,
# which pays for warm-up: a few percent of the rows sample their lengths well enough to project the run's time
PROBE_SHARE, PROBE_BATCHES = 0.05, 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    model_dir: Path  # head, tokenizer, model card, and the adapter or changed backbone (see tasks.model)
    labels: list[str]
    strategy: str
    device: str
    seconds: float  # training wall time; a resumed run adds its earlier runs' (not the epoch lost when killed)
    samples_per_second: float  # in this run
    losses: list[float]  # mean training loss per epoch
    validation: list[dict] = field(default_factory=list)  # per epoch: loss, accuracy, macro_f1
    best_epoch: int | None = None  # 1-based; with early stopping, the epoch whose weights were kept
    trainable_parameters: int = 0
    features_cached: bool = False  # the frozen part's outputs came from the cache
    resumed_from_epoch: int | None = None  # the checkpoint a retried run continued from
    temperature: float = 1.0  # fitted on the validation rows (tasks.calibration); 1.0: none to fit on
    candidates: list[dict] = field(default_factory=list)  # strategy auto: each candidate's validation scores
    choice: dict = field(default_factory=dict)  # strategy auto: the weight of each candidate in the model
    # what the unlabeled texts did: pool_version, pool_batches, pool_rows; "adapt": the domain-adapted backbone
    # (objective, steps, texts, seconds, path, cached); "self_training": rounds, threshold, pseudo_labels per round
    unlabeled: dict = field(default_factory=dict)
    # finetune.privacy: the budget (epsilon, delta, max_grad_norm, noise_multiplier, sample_rate, steps, ...) and
    # the epsilon spent (tasks.privacy.Budget.record); empty: not trained privately
    privacy: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the model each strategy trains


def build_model(cfg: FinetuneParams, labels: list[str]) -> SentenceClassifier:
    """The backbone with a new head for `labels`, its weights frozen or trainable as the strategy says."""
    plan = strategy(cfg.strategy)
    encoder = load_encoder(backbone_path(cfg.backbone))
    depth = encoder.config.num_hidden_layers
    if plan.caches == "freeze_layers" and cfg.freeze_layers > depth:
        raise ParamsError(f"finetune.freeze_layers = {cfg.freeze_layers}: the backbone has only {depth} layers; "
                          f"use 0 to {depth}")
    encoder.requires_grad_(plan.backbone_trains)
    if encoder.pooler is not None:
        encoder.pooler.requires_grad_(False)  # mean pooling replaces BERT's pooler: it never runs
    if plan.caches == "freeze_layers":
        encoder.embeddings.requires_grad_(False)
        for block in encoder.encoder.layer[: cfg.freeze_layers]:
            block.requires_grad_(False)
    if cfg.word_embeddings == "freeze":
        encoder.embeddings.word_embeddings.requires_grad_(False)
    if plan.adapter is not None:
        encoder = _with_adapters(encoder, cfg, plan.adapter)
    return SentenceClassifier(encoder, len(labels), cfg.dropout)


def _with_adapters(encoder, cfg: FinetuneParams, kind: str):
    from peft import IA3Config, LoraConfig, get_peft_model

    if kind == "lora":
        key, modules = "lora_target_modules", list(cfg.lora_target_modules)
        config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                            target_modules=modules)
    else:
        key, modules = "ia3_target_modules", cfg.ia3_target_modules
        config = IA3Config(target_modules=modules, feedforward_modules=cfg.ia3_feedforward_modules)
    try:
        return get_peft_model(encoder, config)
    except ValueError as err:  # a target module name that the backbone does not have
        raise ParamsError(f"finetune.{key} = {modules}: {' '.join(str(err).split())[:200]}") from None


def cached_layer(cfg: FinetuneParams, model: SentenceClassifier) -> int | None:
    """The layer whose output is computed once: the top when the strategy freezes every layer, `freeze_layers`
    when it freezes the lower ones (none when that is 0)."""
    caches = strategy(cfg.strategy).caches
    if caches == "top":
        return model.depth
    if caches == "freeze_layers" and cfg.freeze_layers > 0:
        return cfg.freeze_layers
    return None


def param_groups(model: SentenceClassifier, cfg: FinetuneParams) -> list[dict]:
    """Optimizer groups: the head at `head_learning_rate`; backbone layer i (of n) at
    learning_rate * layer_lr_decay ** (n - 1 - i), the embeddings one factor lower; adapters at learning_rate.
    Every group is listed even when frozen now, so gradual unfreezing needs no new optimizer."""
    groups = [{"params": list(model.head.parameters()), "lr": cfg.head_learning_rate, "name": "head"}]
    optimizes = strategy(cfg.strategy).optimizes
    if optimizes == "adapters":
        adapters = [p for p in model.encoder.parameters() if p.requires_grad]
        return groups + [{"params": adapters, "lr": cfg.learning_rate, "name": "adapters"}]
    if optimizes == "head":
        return groups
    bert, depth = model.bert, model.depth
    for i, block in enumerate(bert.encoder.layer):
        rate = cfg.learning_rate * cfg.layer_lr_decay ** (depth - 1 - i)
        groups.append({"params": list(block.parameters()), "lr": rate, "name": f"layer{i}"})
    rate = cfg.learning_rate * cfg.layer_lr_decay**depth
    groups.append({"params": list(bert.embeddings.parameters()), "lr": rate, "name": "embeddings"})
    return groups


def unfreeze_for_epoch(model: SentenceClassifier, epoch: int, word_embeddings: str = "train") -> None:
    """gradual_unfreeze: in epoch e (0-based) the head and the top e layers train; the embeddings join last,
    less the word vectors when `finetune.word_embeddings` freezes them."""
    depth = model.depth
    for i, block in enumerate(model.bert.encoder.layer):
        block.requires_grad_(i >= depth - epoch)
    model.bert.embeddings.requires_grad_(epoch > depth)
    if word_embeddings == "freeze":
        model.bert.embeddings.word_embeddings.requires_grad_(False)


# ---------------------------------------------------------------- inputs


@dataclass
class Rows:
    """Texts with their label indices, and the frozen part's outputs when the strategy caches them."""

    texts: list[str]
    targets: torch.Tensor
    features: frozen.Features | None = None
    lengths: torch.Tensor | None = None  # tokens per row where batches run in length pieces (the CPU); None: whole


class OverTime(Exception):
    """A training run's projected time is over the limit it was given; raised early in its first epoch."""

    def __init__(self, projected: float, limit: float, probed: float):
        super().__init__(f"projected {projected:.0f} s of training, more than the {limit:.0f} s allowed")
        self.projected, self.limit, self.probed = projected, limit, probed


class Projection:
    """Called after each batch of a run's first epoch: times the batches after the first (which pays for
    warm-up) and, after PROBE_SHARE of the epoch's batches (or at its end), projects the run's training time
    from the share of the epoch's work done; raises OverTime when that is over `limit`. Work is the rows'
    tokens where they are known (the CPU, where time follows tokens), else the rows."""

    def __init__(self, limit: float, rows: Rows, order: torch.Tensor, batches: int, epochs: int, spent: float,
                 clock: Callable[[], float] = time.perf_counter):
        self.limit, self.epochs, self.spent, self.batches, self.clock = limit, epochs, spent, batches, clock
        self.work = rows.lengths.double() if rows.lengths is not None else torch.ones(len(rows.targets),
                                                                                       dtype=torch.float64)
        self.per_epoch = float(self.work[order].sum())
        self.check_at = min(batches, 1 + max(PROBE_BATCHES, math.ceil(batches * PROBE_SHARE)))
        self.seen, self.done, self.started = 0, 0.0, clock()

    def __call__(self, index: torch.Tensor) -> None:
        self.seen += 1
        if self.seen > self.check_at:
            return
        if self.seen == 1 and self.batches > 1:  # warm-up: time from its end
            self.started = self.clock()
            return
        self.done += float(self.work[index].sum())
        if self.seen == self.check_at:
            probed = self.clock() - self.started
            projected = self.spent + probed / self.done * self.per_epoch * self.epochs
            if projected > self.limit:
                raise OverTime(projected, self.limit, probed)


def token_lengths(rows: Rows, tokenizer, max_length: int) -> torch.Tensor | None:
    """Tokens per row as the trainable part reads it (None for pooled vectors: nothing to pad)."""
    if rows.features is not None:
        return None if rows.features.tokens is None else torch.tensor([len(row) for row in rows.features.tokens])
    # every truncation keeps min(length, max_length) tokens, so the default one counts them for all
    return torch.tensor([len(row["input_ids"]) for row in token_rows(tokenizer, rows.texts, max_length)])


def length_pieces(lengths: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Positions 0..n-1 of a batch, shortest row first, cut into pieces whose padded size (rows x the piece's
    longest row) stays within `budget` tokens; a row longer than `budget` is a piece by itself."""
    order = torch.argsort(lengths, stable=True)
    pieces, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or (end + 1 - start) * int(lengths[order[end]]) > budget:
            pieces.append(order[start:end])
            start = end
    return pieces


def labeled_rows(train: pd.DataFrame) -> list[bool]:
    """Which training rows carry a person's label (False: a pseudo-label from self-training)."""
    return (~train[PSEUDO].astype(bool)).tolist() if PSEUDO in train else [True] * len(train)


def carve_validation(texts: list[str], labels: list[str], fraction: float, seed: int,
                     labeled: list[bool] | None = None):
    """A stratified `fraction` of each label's rows (none of a label with fewer than 2 rows) for early
    stopping; returns (train indices, validation indices). Only `labeled` rows (default: all) are held out:
    a pseudo-label says what the model already believes, so scoring on it would grade the model by itself."""
    if fraction == 0:
        return list(range(len(texts))), []
    rng = np.random.default_rng(seed)
    held = []
    for label in sorted(set(labels)):
        index = [i for i, value in enumerate(labels) if value == label and (labeled is None or labeled[i])]
        take = int(round(len(index) * fraction)) if len(index) >= 2 else 0
        held += rng.permutation(index)[:take].tolist()
    held_set = set(held)
    return [i for i in range(len(texts)) if i not in held_set], sorted(held)


def epoch_order(rows: Rows, cfg: FinetuneParams, seed: int, epoch: int) -> torch.Tensor:
    """This epoch's row order, from (seed, epoch) alone, so that a resumed run sees the same batches;
    with `class_balance: oversample` every label is drawn up to the largest label's count."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    index = torch.arange(len(rows.targets))
    if cfg.class_balance == "oversample":
        counts = torch.bincount(rows.targets)
        largest = int(counts.max())
        parts = []
        for label in range(len(counts)):
            members = index[rows.targets == label]
            if len(members):
                picks = torch.randint(len(members), (largest - len(members),), generator=generator)
                parts += [members, members[picks]]
        index = torch.cat(parts)
    return index[torch.randperm(len(index), generator=generator)]


def class_weights(targets: torch.Tensor, classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so that the weights average 1 over the rows."""
    counts = torch.bincount(targets, minlength=classes).float().clamp(min=1)
    return len(targets) / (classes * counts)


def vectors_for(model: SentenceClassifier, rows: Rows, index: torch.Tensor, tokenizer, cfg: FinetuneParams,
                device: Device) -> torch.Tensor:
    """The sentence vectors of rows `index`, in that order: one padded batch, or in length pieces when the rows
    have `lengths` (the same vectors, so the same loss and gradients)."""
    if rows.lengths is None:
        return _embed(model, rows, index, tokenizer, cfg, device)
    pieces = length_pieces(rows.lengths[index], PIECE_TOKENS if device.device.type == "cpu" else GPU_PIECE_TOKENS)
    vectors = torch.cat([_embed(model, rows, index[piece], tokenizer, cfg, device) for piece in pieces])
    return vectors[torch.argsort(torch.cat(pieces))]


def _embed(model: SentenceClassifier, rows: Rows, index: torch.Tensor, tokenizer, cfg: FinetuneParams,
           device: Device) -> torch.Tensor:
    """The sentence vectors of rows `index` as one padded batch (from the cached frozen part's outputs when
    there are some)."""
    if rows.features is not None:
        inputs, mask = rows.features.batch(index, device)
        if mask is None:
            return inputs
        with device.autocast():
            return model.embed_from(inputs, mask, rows.features.layer)
    batch = encode(tokenizer, [rows.texts[i] for i in index.tolist()], cfg.max_length,
                   cfg.truncation).to(device.device)
    with device.autocast():
        return model.embed(**batch)


def logits_for(model: SentenceClassifier, rows: Rows, index: torch.Tensor, tokenizer, cfg: FinetuneParams,
               device: Device) -> torch.Tensor:
    vectors = vectors_for(model, rows, index, tokenizer, cfg, device)
    with device.autocast():
        return model.classify(vectors)


def pair_loss(vectors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SetFit's cosine-similarity loss on every pair of rows in the batch: the squared gap between each pair's
    cosine similarity and 1 (same label) or 0 (different labels). As in SetFit's pair sampling, same-label
    and different-label pairs count half each (with many labels, a batch has few same-label pairs)."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    first, second = torch.triu_indices(len(targets), len(targets), offset=1, device=vectors.device)
    same = (targets[first] == targets[second]).float()
    gap = ((unit[first] * unit[second]).sum(dim=1) - same) ** 2
    kinds = torch.stack([same, 1.0 - same])  # no `if kind.any()`: a Python branch on a GPU value waits for it
    counts = kinds.sum(dim=1)
    means = (kinds * gap).sum(dim=1) / counts.clamp(min=1)
    present = (counts > 0).float()
    return (means * present).sum() / present.sum().clamp(min=1)  # 0 for a batch of one (no pair)


@torch.inference_mode()
def held_logits(model, rows: Rows, tokenizer, cfg: FinetuneParams, device: Device) -> torch.Tensor:
    """The model's logits on held-out rows, in eval mode (no dropout), on the CPU."""
    was_training = model.training
    model.eval()
    logits = torch.cat([logits_for(model, rows, index, tokenizer, cfg, device).float().cpu()
                        for index in torch.arange(len(rows.targets)).split(64)])
    model.train(was_training)
    return logits


@torch.inference_mode()
def score_rows(model, rows: Rows, tokenizer, cfg: FinetuneParams, device: Device) -> dict:
    """Loss, accuracy and macro-F1 on held-out rows (the early-stopping split)."""
    from sklearn.metrics import f1_score

    logits = held_logits(model, rows, tokenizer, cfg, device)
    predicted = logits.argmax(dim=1)
    return {"loss": float(torch.nn.functional.cross_entropy(logits, rows.targets)),
            "accuracy": float((predicted == rows.targets).float().mean()),
            "macro_f1": float(f1_score(rows.targets, predicted, average="macro"))}


# ---------------------------------------------------------------- checkpoints


def run_fingerprint(train: pd.DataFrame, cfg: FinetuneParams, seed: int, start: Path | None = None) -> str:
    """What a checkpoint belongs to: the params (except the device), the seed, the training rows and the
    weights the run starts from (`start`; None: the backbone's)."""
    digest = hashlib.sha256(json.dumps({**cfg.model_dump(exclude={"device"}), "seed": seed},
                                       sort_keys=True).encode())
    for text, label in zip(train["text"], train["label"]):
        digest.update(f"{label}\t{text}\x00".encode("utf-8", "surrogatepass"))
    if start is not None:
        digest.update(hashlib.sha256(start.read_bytes()).digest())
    return digest.hexdigest()[:16]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a run killed while saving keeps the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint, read with `weights_only` (tensors, numbers, strings, lists and dicts only: a file crafted to
    run code when unpickled is refused). One that cannot be read is moved aside to `<name>.unreadable` and the
    run starts from its first epoch: a checkpoint saves time, it never blocks training."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError or EOFError
        aside = path.with_suffix(".unreadable")
        path.replace(aside)
        log.warning("%s: not a checkpoint this version can read safely (%s); moved to %s, training from the start",
                    path, " ".join(str(err).split())[:160], aside.name)
        return None


def all_trainable_state(model: SentenceClassifier, groups: list[dict]) -> dict:
    """The weights of every optimizer group, including groups gradual unfreezing has not reached yet."""
    ids = {id(p) for group in groups for p in group["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in ids}
    return {name: value.detach().clone() for name, value in model.state_dict().items() if name in names}


# ---------------------------------------------------------------- the steps of one run

# What the model card's "encoder" names for each saved form in the strategy table
ENCODER_FORMS = {"base": "base", "adapter": ADAPTER_DIR, "encoder": ENCODER_DIR}


@dataclass
class Setup:
    """What every step of one run shares: the params (max_length capped), the strategy, device and model."""

    cfg: FinetuneParams
    plan: Strategy
    device: Device
    base: str  # the backbone's folder or hub id
    labels: list[str]
    tokenizer: object
    model: SentenceClassifier


@dataclass
class Optimization:
    """The optimizer groups, optimizer, schedule and loss weights of one run."""

    groups: list[dict]
    optimizer: torch.optim.Optimizer
    schedule: object
    batches: int  # per epoch
    weights: torch.Tensor | None  # class weights, with `class_balance: weights`
    private: privacy.PrivateTraining | None = None  # finetune.privacy: Opacus's hooks, DP optimizer and accountant


def prepare(train: pd.DataFrame, cfg: FinetuneParams, seed: int) -> Setup:
    """Seed, pick the device, and build the tokenizer and the model for the training rows' labels."""
    from transformers import AutoTokenizer

    seed_everything(seed)
    device = resolve_device(cfg.device, cfg.precision)
    if cfg.privacy.enabled:  # Opacus multiplies activations by gradients: both in one precision
        device = Device(device.device, None)
    base = backbone_path(cfg.backbone)
    labels = sorted(train["label"].unique())
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = build_model(cfg, labels).to(device.device)
    limit = token_limit(tokenizer, model.bert.config)
    if limit is not None and cfg.max_length > limit:  # longer inputs would index past the position embeddings
        log.info("finetune.max_length %d is more than backbone %s takes: using %d", cfg.max_length, cfg.backbone,
                 limit)
        cfg = cfg.model_copy(update={"max_length": limit})
    model.train()
    return Setup(cfg, strategy(cfg.strategy), device, base, labels, tokenizer, model)


def split_rows(train: pd.DataFrame, cfg: FinetuneParams, labels: list[str], seed: int) -> tuple[Rows, Rows | None]:
    """The rows to train on (augmented when `augment` says so) and the validation rows (None without any)."""
    texts, names = train["text"].astype(str).tolist(), train["label"].tolist()
    train_index, held_index = carve_validation(texts, names, cfg.validation_fraction, seed, labeled_rows(train))
    train_texts, train_names = [texts[i] for i in train_index], [names[i] for i in train_index]
    if cfg.augment == "eda":
        train_texts, train_names = augment(train_texts, train_names, cfg.augment_copies, seed)
    to_targets = lambda values: torch.tensor([labels.index(v) for v in values])  # noqa: E731
    rows = Rows(train_texts, to_targets(train_names))
    held = Rows([texts[i] for i in held_index], to_targets([names[i] for i in held_index])) if held_index else None
    return rows, held


def precompute(setup: Setup, parts: list[Rows], work_dir: Path | None) -> None:
    """Give `parts` the frozen part's outputs (from the cache when there) and, on the CPU, tokens per row."""
    cfg, tokenizer = setup.cfg, setup.tokenizer
    layer = cached_layer(cfg, setup.model)
    cache_dir = work_dir / CACHE_DIR if (work_dir is not None and cfg.cache_features) else None
    if layer is not None:
        for part in parts:
            part.features = frozen.frozen_features(setup.model, tokenizer, part.texts, layer, cfg.max_length,
                                                   cfg.truncation, setup.device, setup.base, cache_dir)
    # private training needs each row's gradient from one pass: pieces would mix rows in Opacus's sums
    pieces = setup.device.device.type == "cpu" or GPU_PIECE_TOKENS is not None
    if pieces and not cfg.privacy.enabled:
        for part in parts:
            part.lengths = token_lengths(part, tokenizer, cfg.max_length)


def checkpoint_layers(setup: Setup, rows: Rows) -> bool:
    """Turn on gradient checkpointing when `finetune.gradient_checkpointing` says so: always, or (auto) on the CPU
    when the batch of the longest rows would exceed CHECKPOINT_TOKENS. Only a backbone that trains has layer
    activations to keep; the result is the same, the memory less and the time more."""
    cfg = setup.cfg
    if cfg.gradient_checkpointing == "never" or (not setup.plan.backbone_trains and setup.plan.adapter is None):
        return False
    if cfg.privacy.enabled:  # the recomputed forward pass would hand Opacus each layer's inputs twice
        log.info("gradient checkpointing off: finetune.privacy needs each layer's inputs once per step")
        return False
    if cfg.gradient_checkpointing == "auto":
        if setup.device.device.type != "cpu" or rows.lengths is None:
            return False
        largest = int(torch.sort(rows.lengths, descending=True).values[: cfg.batch_size].sum())
        if largest <= CHECKPOINT_TOKENS:
            return False
        log.info("gradient checkpointing on: a batch can hold %d tokens (finetune.gradient_checkpointing)", largest)
    setup.model.bert.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return True


def optimization(setup: Setup, rows: Rows, seed: int) -> Optimization:
    """AdamW over the strategy's groups, warmup and decay over every optimizer step, and the class weights."""
    from transformers import get_scheduler

    cfg = setup.cfg
    groups = param_groups(setup.model, cfg)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=FUSED_ADAMW)
    batches = math.ceil(len(epoch_order(rows, cfg, seed, 0)) / cfg.batch_size)
    steps = cfg.epochs * math.ceil(batches / cfg.gradient_accumulation)
    schedule = get_scheduler(cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
                             optimizer, num_warmup_steps=int(steps * cfg.warmup_ratio), num_training_steps=steps)
    weights = (class_weights(rows.targets, len(setup.labels)).to(setup.device.device)
               if cfg.class_balance == "weights" else None)
    if not cfg.privacy.enabled:
        return Optimization(groups, optimizer, schedule, batches, weights)
    budget = privacy.plan(cfg.privacy, len(rows.targets), cfg.batch_size, cfg.epochs)
    log.info("private training: noise multiplier %.3f, sample rate %.4f, %d steps for epsilon %g (delta %g)",
             budget.noise_multiplier, budget.sample_rate, budget.steps, budget.epsilon, budget.delta)
    private = privacy.PrivateTraining(setup.model, optimizer, budget, cfg.batch_size)
    return Optimization(groups, private.optimizer, schedule, budget.steps_per_epoch, weights, private)


def resume(checkpoint: Path | None, setup: Setup, opt: Optimization) -> tuple[dict, int | None]:
    """The run's state, from `checkpoint` when it holds one (weights, optimizer, schedule and random state are
    restored), and the epoch it resumed from (None: a fresh start)."""
    state = {"epoch": 0, "losses": [], "validation": [], "best_score": None, "best_epoch": None,
             "best_state": None, "bad_epochs": 0}
    saved = load_checkpoint(checkpoint) if checkpoint is not None and checkpoint.is_file() else None
    if saved is None:
        return state, None
    setup.model.load_state_dict(saved["model"], strict=False)
    opt.optimizer.load_state_dict(saved["optimizer"])
    opt.schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["torch_rng"])
    if opt.private is not None:
        opt.private.load_state_dict(saved["privacy"])
    if setup.device.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"])
    return saved["state"], saved["state"]["epoch"]


def train_epoch(setup: Setup, opt: Optimization, rows: Rows, seed: int, epoch: int, progress,
                watch: Callable[[torch.Tensor], None] | None = None) -> tuple[float, int]:
    """One pass over this epoch's batches, calling `watch` after each; returns the mean training loss and the
    rows seen."""
    cfg, model, device = setup.cfg, setup.model, setup.device
    total_loss, step_in_accumulation = torch.zeros((), device=device.device), 0
    private = opt.private
    if private is None:
        batches = epoch_order(rows, cfg, seed, epoch).split(cfg.batch_size)
    else:
        batches = private.batches(len(rows.targets), seed, epoch)
    for index in batches:
        cores.refresh()  # another nichetune process may have started or finished beside this one
        if private is not None:
            private.check()
            if not len(index):
                private.empty_step()
                _step(opt.optimizer, opt.schedule)
                progress.update()
                continue
        with device.autocast():  # one context per step: the weights are cast to its precision once
            vectors = vectors_for(model, rows, index, setup.tokenizer, cfg, device)
            logits = model.classify(vectors)
        targets = rows.targets[index].to(device.device)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, weight=opt.weights,
                                                 label_smoothing=cfg.label_smoothing)
        # frozen vectors (head, or gradual_unfreeze before a layer thaws): nothing to shape. Not private: a pair's
        # loss belongs to two rows, so no row's gradient would be its own to clip
        if cfg.pair_loss_weight and setup.plan.pair_loss and vectors.requires_grad and private is None:
            loss = loss + cfg.pair_loss_weight * pair_loss(vectors, targets)
        (loss / cfg.gradient_accumulation).backward()
        step_in_accumulation += 1
        if step_in_accumulation == cfg.gradient_accumulation:
            _step(opt.optimizer, opt.schedule)
            step_in_accumulation = 0
        total_loss += loss.detach() * len(index)  # no .item() per batch: on a GPU each one waits
        progress.update()
        if watch is not None:
            watch(index)
    if step_in_accumulation:
        _step(opt.optimizer, opt.schedule)
    seen = sum(len(index) for index in batches)
    return float(total_loss) / max(seen, 1), seen


def train_epochs(setup: Setup, opt: Optimization, rows: Rows, held: Rows | None, seed: int, state: dict,
                 keep: Callable[[dict], None], limit: float | None = None, spent: float = 0.0) -> int:
    """The epochs from `state`'s on: train, score the validation rows, report, `keep` the state; stops early
    when the validation score says so. With a `limit` (seconds, `spent` of them already), the first of them
    raises OverTime when the run is projected to take longer. Returns the rows seen."""
    cfg, seen = setup.cfg, 0
    progress = bar(opt.batches * (cfg.epochs - state["epoch"]), "training", "batch")
    for epoch in range(state["epoch"], cfg.epochs):
        epoch_started = time.perf_counter()
        progress.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
        if setup.plan.unfreezes_each_epoch:
            unfreeze_for_epoch(setup.model, epoch, cfg.word_embeddings)
        watch = None
        if limit is not None and epoch == state["epoch"] and opt.private is None:
            watch = Projection(limit, rows, epoch_order(rows, cfg, seed, epoch), opt.batches,
                               cfg.epochs - epoch, spent)
        try:
            loss, count = train_epoch(setup, opt, rows, seed, epoch, progress, watch)
        except OverTime:
            progress.close()
            raise
        seen += count
        state["losses"].append(loss)
        state["epoch"] = epoch + 1
        if held is not None and _early_stop(setup.model, held, setup.tokenizer, cfg, setup.device, state,
                                            opt.groups):
            state["stopped"] = True
        scores = state["validation"][-1] if held is not None else {}
        say(epoch_line(epoch + 1, cfg.epochs, state["losses"][-1], time.perf_counter() - epoch_started,
                       cfg.early_stopping_metric, scores.get(cfg.early_stopping_metric)))
        keep(state)
        if state.get("stopped"):
            break
    progress.close()
    return seen


def keep_checkpoint(checkpoint: Path | None, setup: Setup, opt: Optimization,
                    elapsed: Callable[[], float]) -> Callable[[dict], None]:
    """What train_epochs calls after each epoch: save everything a resumed run needs (nothing without a
    checkpoint path); `elapsed` gives the training seconds so far, over every run."""
    def keep(state: dict) -> None:
        if checkpoint is None:
            return
        state["seconds"] = elapsed()
        save_checkpoint(checkpoint, {
            "model": all_trainable_state(setup.model, opt.groups), "optimizer": opt.optimizer.state_dict(),
            "schedule": opt.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if setup.device.device.type == "cuda" else None,
            "privacy": opt.private.state_dict() if opt.private is not None else None, "state": state})
    return keep


def save_model(setup: Setup, fingerprint: str, out_dir: Path, temperature: float) -> Path:
    """Save the classifier with its model card to `out_dir`/model, in the strategy's saved form."""
    cfg = setup.cfg
    card = {"format": 1, "labels": setup.labels, "max_length": cfg.max_length, "strategy": cfg.strategy,
            "base": cfg.backbone if cfg.backbone == "minilm" else setup.base, "fingerprint": fingerprint,
            "hidden_size": setup.model.bert.config.hidden_size, "encoder": ENCODER_FORMS[setup.plan.saves],
            "temperature": temperature, "truncation": cfg.truncation}
    model_dir = out_dir / MODEL_DIR
    save_classifier(setup.model, setup.tokenizer, model_dir, card)
    return model_dir


# ---------------------------------------------------------------- the run


def train_strategy(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path,
                   work_dir: Path | None = None, limit: float | None = None, start: Path | None = None,
                   keep_weights: bool = False) -> FinetuneResult:
    """Train on the training rows (columns text, label) and save the classifier to `out_dir`/model.
    `work_dir` holds the feature cache and the checkpoints; None keeps neither. With a `limit` in seconds, a run
    projected (early in its first epoch) to take longer raises OverTime instead of spending the time. `start`: a
    WEIGHTS_FILE from an earlier run of the same strategy and labels to continue from, where `keep_weights`
    saved it (`out_dir`/WEIGHTS_FILE)."""
    setup = prepare(train, cfg, seed)
    cfg = setup.cfg
    if start is not None:
        setup.model.load_state_dict(torch.load(start, map_location=setup.device.device, weights_only=True),
                                    strict=False)
    rows, held = split_rows(train, cfg, setup.labels, seed)
    started = time.perf_counter()
    precompute(setup, [part for part in (rows, held) if part is not None], work_dir)
    checkpoint_layers(setup, rows)
    opt = optimization(setup, rows, seed)
    fingerprint = run_fingerprint(train, cfg, seed, start)
    checkpoint = work_dir / CHECKPOINT_DIR / f"finetune-{fingerprint}.pt" if work_dir is not None else None
    state, resumed = resume(checkpoint, setup, opt)
    earlier = state.get("seconds", 0.0)  # spent by the runs before this one, up to their last checkpoint
    keep = keep_checkpoint(checkpoint, setup, opt, lambda: earlier + time.perf_counter() - started)
    seen = train_epochs(setup, opt, rows, held, seed, state, keep, limit, time.perf_counter() - started)
    this_run = time.perf_counter() - started
    spent = {}
    if opt.private is not None:
        spent = opt.private.record()
        opt.private.close()
        say(f"privacy: epsilon {spent['spent_epsilon']:.2f} of {spent['epsilon']:g} spent (delta {spent['delta']:g}, "
            f"noise multiplier {spent['noise_multiplier']:.3f}, {spent['steps_taken']} steps)")
    if state["best_state"] is not None:
        setup.model.load_state_dict(state["best_state"], strict=False)
    temperature = calibrate(setup, held)
    model_dir = save_model(setup, fingerprint, out_dir, temperature)
    if keep_weights:
        torch.save(all_trainable_state(setup.model, opt.groups), out_dir / WEIGHTS_FILE)
    result = FinetuneResult(
        model_dir, setup.labels, cfg.strategy, setup.device.name, earlier + this_run,
        seen / this_run if this_run else 0.0, state["losses"], state["validation"], state["best_epoch"],
        sum(p.numel() for group in opt.groups for p in group["params"] if p.requires_grad),
        bool(rows.features is not None and rows.features.from_cache), resumed, temperature, privacy=spent)
    (out_dir / LOG_FILE).write_text(json.dumps({**asdict(result), "model_dir": str(model_dir)}, indent=2))
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # finished: the model is saved, the checkpoint has done its job
        remove_stale_checkpoints(checkpoint.parent)
    return result


def remove_stale_checkpoints(folder: Path) -> None:
    """Remove the checkpoints in `folder` (and what a killed save or a refused load left) that no run has written
    for STALE_CHECKPOINT_DAYS; a live run writes its own after every epoch."""
    cutoff, freed, count = time.time() - STALE_CHECKPOINT_DAYS * 86_400, 0, 0
    for path in folder.glob("finetune-*"):
        try:
            stat = path.stat()
            if stat.st_mtime < cutoff:
                path.unlink()
                freed, count = freed + stat.st_size, count + 1
        except OSError:  # another run removed it meanwhile
            continue
    if count:
        say(f"removed {count} checkpoint{'s' * (count > 1)} ({freed / 2**20:.0f} MB) in {folder} that no run had "
            f"written for {STALE_CHECKPOINT_DAYS} days")


def calibrate(setup: Setup, held: Rows | None) -> float:
    """The temperature that calibrates the trained model on the validation rows (1.0 without any)."""
    if held is None:
        return 1.0
    logits = held_logits(setup.model, held, setup.tokenizer, setup.cfg, setup.device)
    return fit_temperature(torch.softmax(logits, dim=1).numpy(), held.targets.numpy())


def _step(optimizer, schedule) -> None:
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def _early_stop(model, held: Rows, tokenizer, cfg: FinetuneParams, device: Device, state: dict,
                groups: list[dict]) -> bool:
    """Score the validation rows; keep the best weights; True once `patience` epochs brought no improvement."""
    scores = score_rows(model, held, tokenizer, cfg, device)
    state["validation"].append(scores)
    value = scores[cfg.early_stopping_metric]
    score = -value if cfg.early_stopping_metric == "loss" else value
    if state["best_score"] is None or score > state["best_score"]:
        state.update(best_score=score, best_epoch=state["epoch"], bad_epochs=0,
                     best_state=all_trainable_state(model, groups))
        return False
    state["bad_epochs"] += 1
    return state["bad_epochs"] >= cfg.early_stopping_patience
