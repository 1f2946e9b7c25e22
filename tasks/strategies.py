"""The fine-tuning strategies: one entry each, with everything the training loop, the saved model, the docs and
the quality benchmark need to know about it. Adding a strategy is one entry here (and its name in
`tasks.config.Strategy`, which a test keeps equal to these keys).

No torch here: `tasks.config` and the benchmarks read this table without loading the training stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tasks.errors import ParamsError


@dataclass(frozen=True)
class Strategy:
    """What one strategy trains, what it computes once, how it is saved, and what it was benchmarked with."""

    name: str
    trains: str  # for people: the docs' "what trains" column
    runs: str  # for people: the docs' "what runs each epoch" column
    saved: str  # for people: the docs' "saved in finetune/model/" column
    backbone_trains: bool  # the backbone's weights start trainable (those `freezes` names are then frozen again)
    # the layer whose output is computed once and cached: "top" (every layer frozen), "freeze_layers" (the
    # embeddings and finetune.freeze_layers lowest layers frozen), None: nothing frozen below the trained part
    caches: Literal["top", "freeze_layers"] | None = None
    adapter: Literal["lora", "ia3"] | None = None  # peft adapters on the frozen backbone
    # optimizer groups besides the head: the adapters, one group per backbone layer (layer-wise rates), or none
    optimizes: Literal["adapters", "layers", "head"] = "layers"
    unfreezes_each_epoch: bool = False  # one more layer from the top each epoch
    # what `nichetune.json` "encoder" says: the base backbone unchanged, an adapter on it, or a whole encoder
    saves: Literal["base", "adapter", "encoder", "members"] = "encoder"
    # the pair loss shapes sentence vectors, so it needs trainable weights under them
    pair_loss: bool = True
    # finetune settings on top of params.yaml that `nichetune bench quality` runs it with when it is not the
    # default strategy (BENCHMARKS.md has the figures); pair_loss_weight 0 where the figures were measured
    # without the pair loss
    benchmarked: dict = field(default_factory=dict)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("head", "the head only", "the head, on sentence vectors computed once and cached",
             "head (a few KB) + a reference to the base", backbone_trains=False, caches="top",
             optimizes="head", saves="base", pair_loss=False,
             benchmarked={"epochs": 30, "pair_loss_weight": 0.0}),
    Strategy("freeze", "layers above `freeze_layers` and the head",
             "the upper layers, on the cached output of the last frozen layer", "the changed backbone",
             backbone_trains=True, caches="freeze_layers",
             benchmarked={"epochs": 10, "learning_rate": 1e-4, "freeze_layers": 4, "pair_loss_weight": 0.0}),
    Strategy("lora", "LoRA adapters (peft) on `lora_target_modules`, and the head", "the whole backbone",
             "adapter (about 300 KB) + a reference to the base", backbone_trains=False, adapter="lora",
             optimizes="adapters", saves="adapter",
             benchmarked={"epochs": 10, "learning_rate": 3e-3, "pair_loss_weight": 0.0}),
    Strategy("ia3", "IA3 scaling vectors (peft) and the head", "the whole backbone",
             "adapter (tens of KB) + a reference to the base", backbone_trains=False, adapter="ia3",
             optimizes="adapters", saves="adapter",
             benchmarked={"epochs": 10, "learning_rate": 1e-2, "pair_loss_weight": 0.0}),
    Strategy("gradual_unfreeze", "the head first, then one more layer from the top each epoch; layer-wise "
             "learning rates", "the whole backbone", "the changed backbone", backbone_trains=False,
             unfreezes_each_epoch=True,
             benchmarked={"epochs": 8, "learning_rate": 1e-4, "layer_lr_decay": 0.8, "pair_loss_weight": 0.0}),
    Strategy("full", "every weight (the word vectors as `word_embeddings` says), layer-wise rates when "
             "`layer_lr_decay` < 1", "the whole backbone",
             "the changed backbone (about 90 MB)", backbone_trains=True,
             benchmarked={"epochs": 8, "learning_rate": 1e-4, "pair_loss_weight": 10.0}),
    Strategy("auto", "each of `candidates` (TF-IDF + logistic regression, sentence vectors + logistic "
             "regression, one fine-tuning strategy), then their mixture's weights and temperature on the "
             "validation rows", "the fine-tuned candidate's epochs; the others fit in seconds",
             "the chosen candidates and their weights (members/)", backbone_trains=False, optimizes="head",
             saves="members", pair_loss=False),
]}


AUTO_KEYS = {"candidates", "choice_metric", "refit", "refit_epochs", "time_budget"}
LORA_KEYS = {"lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"}
IA3_KEYS = {"ia3_target_modules", "ia3_feedforward_modules"}


def unread_keys(name: str) -> set[str]:
    """The finetune keys that strategy `name` never reads: two trainings that differ only in them are the same.
    `auto` reads what its fine-tuning candidate reads, so it is taken to read every key."""
    if name == "auto":
        return set()
    entry = strategy(name)
    unread = AUTO_KEYS | ({"freeze_layers"} if entry.caches != "freeze_layers" else set())
    unread |= (LORA_KEYS if entry.adapter != "lora" else set()) | (IA3_KEYS if entry.adapter != "ia3" else set())
    unread |= {"layer_lr_decay"} if entry.optimizes != "layers" else set()
    unread |= {"learning_rate"} if entry.optimizes == "head" else set()
    # only a strategy that trains the backbone's own embeddings has word vectors to train or keep
    unread |= {"word_embeddings"} if entry.optimizes != "layers" or entry.caches == "freeze_layers" else set()
    unread |= {"pair_loss_weight"} if not entry.pair_loss else set()
    return unread


def strategy(name: str) -> Strategy:
    """The table entry for `name`; an unknown name lists the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ParamsError(f"finetune.strategy = {name!r}: not a known strategy; use one of "
                          f"{', '.join(STRATEGIES)}") from None


def markdown_table(default: str) -> str:
    """The docs' strategy table (docs/strategies.md), one row per entry; `default` is marked."""
    lines = ["| strategy | what trains | what runs each epoch | saved in `finetune/model/` | benchmarked with |",
             "|---|---|---|---|---|"]
    for s in STRATEGIES.values():
        name = f"`{s.name}`" + (" (default)" if s.name == default else "")
        settings = ", ".join(f"`{key}: {value:g}`" for key, value in s.benchmarked.items())
        lines.append(f"| {name} | {s.trains} | {s.runs} | {s.saved} | {settings} |")
    return "\n".join(lines)
