"""Typed, validated params: one frozen model per params.yaml section, and the paths derived from them."""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from tasks.backbone import BackboneError, backbone_depth
from tasks.errors import ParamsError


class Section(BaseModel):
    """A params.yaml section: unknown keys and bad values fail at load time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for an int field: `batch_size: true` would train with batches of one
        if isinstance(value, bool) and _takes_numbers(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_not_number", "a number is expected, not true or false")
        return value


def _takes_numbers(annotation: Any) -> bool:
    """Whether a field's type is int or float, alone or in a union such as `float | None`."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_numbers(arg) for arg in typing.get_args(annotation))
    return False


def _known_encoding(value: str) -> str:
    if value != "auto":
        try:
            text = codecs.lookup(value)._is_text_encoding  # rot13, base64, ...: codecs, not text encodings
        except LookupError:
            text = False
        if not text:
            raise ValueError("not a text encoding Python knows; use 'auto' or a name such as 'utf-8', 'cp1252', "
                             "'latin-1' or 'utf-16'")
    return value


def _one_character(value: str) -> str:
    if value != "auto" and (len(value) != 1 or value in '"\r\n'):
        raise ValueError("use 'auto' or one character other than a quote or a line break, such as ',', ';', '|' "
                         "or a tab (\"\\t\" in YAML)")
    return value


_WINDOW = re.compile(r"([1-9]\d*)([DWM])")


def parse_window(text: str) -> tuple[int, str]:
    """`evaluate.window` as (count, unit): D days, W weeks of seven days, M calendar months."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected a whole number and a unit D (days), W (weeks) or M (calendar months), "
                         "for example 1D, 1W, 2W or 1M; or null for no windows")
    return int(match[1]), match[2]


Encoding = Annotated[str, AfterValidator(_known_encoding)]
Delimiter = Annotated[str, AfterValidator(_one_character)]


class BaseParams(Section):
    seed: int = 42  # the only source of randomness for every stage
    workdir: str = "outputs"  # stage outputs, MLflow's SQLite store and artifacts, relative to the project root


Severity = Literal["fail", "warn"]


class IngestParams(Section):
    dataset: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # data/raw/<dataset>/, one task each
    path: str | None = "data/demo/messages.csv"  # a file `nichetune run` ingests first (once); None: stored only
    text_column: str = "text"
    label_column: str = "label"
    timestamp_column: str | None = None  # None: no time order, the split is stratified
    id_column: str | None = None  # kept with each row when set
    metadata_columns: list[str] = []  # other columns to keep (e.g. channel), stored beside text and label
    encoding: Encoding = "auto"  # auto: UTF-8 with or without BOM, else the detected encoding (reported)
    delimiter: Delimiter = "auto"  # auto: sniffed among , ; tab and |
    # numeric dates such as 07/09/2026: auto reads the order from the file's own dates (a first number over 12 is
    # a day, a second one a month) and stops where nothing tells; day_first (07/09 is 7 September) | month_first
    date_order: Literal["auto", "day_first", "month_first"] = "auto"
    max_text_chars: int = Field(100_000, ge=1)  # longer texts are quarantined: a guard against absurd sizes only
    redact_pii: bool = True  # emails, phone, card, account numbers and IBANs are masked before storage
    repair_encoding: bool = True  # text an earlier system decoded wrong ("KÃ¶ln") is repaired (ftfy) and counted
    dvc_lock_wait: int = Field(600, ge=1)  # seconds to wait for another DVC command to release the repository
    incoming_max_mb: float = Field(500, gt=0)  # the incoming watcher refuses (moves to failed/) larger files


class CheckSeverity(Section):
    """What each validation check does when it fails: stop the run (fail) or only report (warn)."""

    schema_: Severity = Field("fail", alias="schema")
    not_null: Severity = "fail"
    label_set: Severity = "fail"
    text_length: Severity = "fail"
    duplicates: Severity = "warn"
    conflicts: Severity = "fail"
    class_count: Severity = "fail"
    class_share: Severity = "warn"
    label_shift: Severity = "warn"


class ValidateParams(Section):
    labels: list[str] = []  # the known label set; empty accepts any label (ingest quarantines others)
    min_examples_per_class: int = Field(8, ge=1)
    min_class_share: float = Field(0.0, ge=0, lt=1)  # each class's share of the rows, at least
    max_text_chars: int = Field(100_000, ge=1)  # the text_length check: a guard against absurd sizes only
    max_duplicate_rate: float = Field(0.01, ge=0, le=1)  # share of rows whose text repeats another row's
    max_label_shift: float = Field(0.1, ge=0)  # KL divergence of labels against the previous dataset version
    severity: CheckSeverity = CheckSeverity()


class SplitParams(Section):
    holdout_fraction: float = Field(0.2, gt=0, lt=1)  # the most recent share when timestamps exist


Strategy = Literal["head", "freeze", "lora", "ia3", "gradual_unfreeze", "full", "auto"]
LEARNERS = ("tfidf", "embedding")  # the auto strategy's candidates besides the fine-tuning strategies
Truncation = Literal["head", "head_tail"]  # tasks.inference.TRUNCATIONS, which cuts the texts


class PrivacyParams(Section):
    """finetune.privacy: differentially private training with Opacus (tasks.privacy, docs/privacy.md)."""

    epsilon: float | None = Field(None, gt=0)  # the privacy budget a training may spend; null: not private
    delta: float = Field(1e-5, gt=0, lt=1)  # the chance the bound fails; below 1 / training rows
    max_grad_norm: float = Field(1.0, gt=0)  # each row's gradient is clipped to this L2 norm
    noise_multiplier: float | None = Field(None, gt=0)  # null: the smallest that keeps the budget
    accountant: Literal["rdp", "prv"] = "rdp"  # Opacus's accountant: Renyi DP, or privacy random variables

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None


# Why each of these strategies is refused with finetune.privacy; the others train privately (tasks.privacy)
NOT_PRIVATE = {
    "auto": "it chooses and mixes its candidates on validation rows and fits TF-IDF outside Opacus",
    "full": "the backbone's own weights were not measured private here (Opacus's position-embedding gradients are "
            "shared by the batch)",
    "freeze": "the backbone's own weights were not measured private here",
    "gradual_unfreeze": "the backbone's own weights were not measured private here",
}


class FinetuneParams(Section):
    """How the backbone is adapted; see docs/strategies.md for what each one trains."""

    backbone: str = "minilm"  # "minilm" (the packaged all-MiniLM-L6-v2), a local model folder, or a hub id
    strategy: Strategy = "auto"
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    gradient_accumulation: int = Field(1, ge=1)  # optimizer step every N batches
    learning_rate: float = Field(1e-4, gt=0)  # trained backbone weights or adapters
    head_learning_rate: float = Field(1e-2, gt=0)  # the new head
    layer_lr_decay: float = Field(1.0, gt=0, le=1)  # each layer below the top gets this factor once more
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # after warmup
    max_length: int = Field(512, ge=8)  # tokens, at most the backbone's limit; batches padded to their longest text
    truncation: Truncation = "head"  # a longer text keeps its first tokens (head) or its first and last (head_tail)
    dropout: float = Field(0.1, ge=0, lt=1)  # before the head
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # SetFit's objective in the batch: the squared gap between each pair's cosine similarity and 1 (same label)
    # or 0, over every pair of rows in the batch, added to the cross-entropy with this weight; 0: off
    pair_loss_weight: float = Field(10.0, ge=0)
    class_balance: Literal["none", "weights", "oversample"] = "none"  # for imbalanced labels
    # full, gradual_unfreeze: the word vectors (MiniLM: 30,522 x 384, half its weights) stay as pretrained or
    # train; the position vectors, the embeddings' LayerNorm and every layer above train either way. Frozen,
    # fine-tuning ran 1.15x the samples per second on 2 CPU cores and scored the same on dev rows within noise
    # (BENCHMARKS.md, "Fine-tuning with the word vectors frozen")
    word_embeddings: Literal["freeze", "train"] = "freeze"
    # strategy freeze: the embeddings and this many lowest layers stay fixed; at most the backbone's layers
    freeze_layers: int = Field(4, ge=0, validate_default=True)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_target_modules: list[str] = Field(["query", "value"], min_length=1)
    ia3_target_modules: list[str] | None = None  # None: peft's defaults for the backbone's architecture
    ia3_feedforward_modules: list[str] | None = None
    # carved from training rows for early stopping and calibration (and auto's choice, which takes 0.2 at 0)
    validation_fraction: float = Field(0.0, ge=0, lt=0.5)
    # strategy auto: what it trains and mixes (tfidf, embedding, and fine-tuning strategies), and how it chooses
    candidates: list[str] = Field(["tfidf", "embedding", "full"], min_length=1)
    choice_metric: Literal["accuracy", "macro_f1"] = "macro_f1"
    # strategy auto: after the carve that chose it, the fine-tuned candidate trains on every training row: retrain
    # (from the backbone, for the epochs early stopping kept), continue (from the carve's weights, for refit_epochs)
    # or off (the carve's model is kept). true and false read as retrain and off
    refit: Literal["retrain", "continue", "off"] = "retrain"
    refit_epochs: int = Field(1, ge=1)  # refit continue: epochs over every row
    # strategy auto: minutes its training may take; a fine-tuned candidate projected (from its first batches) past
    # what is left is left out. The fast learners always train. None: no limit. 10: a candidate in about 15
    # minutes end to end on a laptop's CPU (BENCHMARKS.md, endtoend)
    time_budget: float | None = Field(10.0, gt=0)
    early_stopping_patience: int = Field(3, ge=1)  # epochs without improvement before stopping
    early_stopping_metric: Literal["loss", "accuracy", "macro_f1"] = "loss"
    augment: Literal["none", "eda"] = "none"  # eda: random word deletion and swap, training rows only
    augment_copies: int = Field(1, ge=1)  # augmented copies of each training row (made once, from base.seed)
    cache_features: bool = True  # frozen layers' outputs computed once per dataset version, kept in workdir
    # recompute each layer's activations in the backward pass instead of keeping them: auto on the CPU when a batch
    # can hold more than CHECKPOINT_TOKENS tokens (long texts), where it cut peak memory 2.6x for 17% more time
    gradient_checkpointing: Literal["auto", "always", "never"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present, else the CPU
    # auto: bf16 autocast where the hardware runs it fast (CUDA with bf16, a CPU with AMX or AVX-512 BF16), else
    # fp32; fp32: never.
    # Prediction follows the machine it runs on (NICHETUNE_PRECISION=fp32 keeps a process in fp32)
    precision: Literal["auto", "fp32"] = "auto"
    privacy: PrivacyParams = PrivacyParams()  # differential privacy; epsilon null: off

    @property
    def tuned_strategy(self) -> str | None:
        """The strategy that fine-tunes a network: `strategy` itself, or auto's fine-tuning candidate (None when
        its candidates are only tfidf and embedding)."""
        if self.strategy != "auto":
            return self.strategy
        return next((name for name in self.candidates if name not in LEARNERS), None)

    @field_validator("backbone")
    @classmethod
    def _backbone_is_here(cls, value: str) -> str:
        try:
            backbone_depth(value)  # reads its config.json: a missing or broken folder fails before any stage
        except BackboneError as err:
            raise ValueError(err.reason) from None
        return value

    @field_validator("refit", mode="before")
    @classmethod
    def _refit_from_boolean(cls, value: Any) -> Any:
        # YAML reads `off` as false, and params from before `continue` existed say true or false
        return {True: "retrain", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("candidates")
    @classmethod
    def _known_candidates(cls, value: list[str]) -> list[str]:
        known = [*LEARNERS, *(name for name in typing.get_args(Strategy) if name != "auto")]
        unknown = [name for name in value if name not in known]
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"{', '.join(unknown) or 'a repeated name'}: list each candidate once, among "
                             f"{', '.join(known)}")
        if sum(name not in LEARNERS for name in value) > 1:
            raise ValueError("at most one fine-tuning strategy (the others are tfidf and embedding)")
        return value

    @field_validator("freeze_layers")
    @classmethod
    def _freeze_within_the_backbone(cls, value: int, info: ValidationInfo) -> int:
        backbone = info.data.get("backbone")  # absent when the backbone itself was refused
        if info.data.get("strategy") == "freeze" and backbone is not None:
            try:
                depth = backbone_depth(backbone)
            except BackboneError:
                return value
            if depth is not None and value > depth:
                raise ValueError(f"finetune.backbone {backbone!r} has {depth} layers; use 0 to {depth}")
        return value


class DriftThresholds(Section):
    """A drift score at or above a threshold warns (drift_warn) or blocks promotion (drift_block); null: never.

    Scores grow with drift: text and embeddings are a domain classifier's ROC AUC (0.5 = no drift),
    descriptors (text length, words, ...) the normed Wasserstein distance, label and prediction the
    Jensen-Shannon distance between the window's and the training rows' class mix."""

    text: float | None = Field(None, ge=0)
    descriptors: float | None = Field(None, ge=0)
    embeddings: float | None = Field(None, ge=0)
    label: float | None = Field(None, ge=0)
    prediction: float | None = Field(None, ge=0)


class EvaluateParams(Section):
    drift_report: bool = True  # the Evidently HTML report (drift of holdout vs training rows, quality)
    batch_size: int = Field(64, ge=1)
    segment_column: str | None = None  # a metadata column (e.g. channel): the metrics per segment
    segment_margin: float = Field(0.1, ge=0, le=1)  # flag a segment whose macro-F1 is this far below overall
    window: str | None = "1W"  # windows after the training period: nD, nW or nM (calendar months); null: none
    min_window_rows: int = Field(10, ge=2)  # fewer rows: the window gets quality but no drift test (too noisy)
    # Measured on windows drawn from the demo's own training rows (no drift): at 10-22 rows the descriptor
    # distance reaches 0.4-0.5 and the label distance 0.25-0.4 by chance; ROC AUCs stay under 0.75.
    drift_warn: DriftThresholds = DriftThresholds(text=0.75, descriptors=0.6, embeddings=0.75, label=0.4,
                                                  prediction=0.4)
    drift_block: DriftThresholds = DriftThresholds(embeddings=0.95, prediction=0.6)
    explain_samples: int = Field(10, ge=0)  # holdout rows of each kind (correct, wrong) with token attributions

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value


class AdaptParams(Section):
    """Domain-adaptive pretraining: the backbone trained further on the dataset's texts without their labels (the
    unlabeled pool and, by default, the training rows' texts; never a holdout text) before the strategy starts from
    it; done once per corpus, backbone and these settings (cached)."""

    objective: Literal["none", "mlm", "tsdae", "simcse"] = "none"  # none: the backbone as packaged
    # pool+training: the training rows' texts join the pool (task-adaptive pretraining), so a dataset without
    # unlabeled texts adapts too; pool: the unlabeled texts alone, adapted again only when the pool changes
    corpus: Literal["pool+training", "pool"] = "pool+training"
    steps: int = Field(500, ge=1)  # optimizer steps over the corpus
    batch_size: int = Field(16, ge=2)  # simcse's in-batch negatives need at least two texts
    learning_rate: float = Field(5e-5, gt=0)
    max_length: int = Field(128, ge=8)  # tokens per pool text
    max_texts: int = Field(10_000, ge=1)  # a larger pool is sampled (base.seed) down to this many texts
    mask_probability: float = Field(0.15, gt=0, lt=1)  # mlm: share of tokens masked


class SelfTrainingParams(Section):
    """Self-training: the trained model labels the unlabeled texts it is sure of, and the strategy trains again
    with them; pseudo-labeled rows never enter validation, evaluation or the gate."""

    rounds: int = Field(0, ge=0)  # 0: off
    threshold: float = Field(0.7, gt=0, le=1)  # calibrated probability a pseudo-label needs
    max_per_class: float = Field(2.0, gt=0)  # round r: at most r times this times a class's labeled rows


class SuggestParams(Section):
    """`nichetune suggest`: which unlabeled texts to label next (tasks.suggest)."""

    strategy: Literal["uncertainty", "diverse", "random"] = "diverse"
    n: int = Field(50, ge=1)  # texts per batch
    shortlist: int = Field(10, ge=1)  # diverse: n clusters of the n x shortlist least sure texts (chosen on dev rows)
    after_review: bool = False  # every training flow ends with the next batch for the champion (nichetune up)


class RegisterParams(Section):
    model_name: str = Field("nichetune-demo", min_length=1)
    experiment: str = Field("nichetune", min_length=1)
    alias: str = Field("challenger", min_length=1)  # every registered version gets it
    approval: Literal["reviewer", "auto"] = "reviewer"  # reviewer: the flow pauses for a Prefect input form
    primary_metric: Literal["accuracy", "macro_f1"] = "macro_f1"  # what the gate compares
    min_improvement: float = Field(0.0, ge=-1, le=1)  # challenger minus champion, on the primary metric
    review_timeout: int = Field(86400, ge=1)  # seconds a paused flow waits for the reviewer
    unmeasured_drift: Literal["warn", "block"] = "warn"  # when no time window got a drift result: block promotion?
    require_significant: bool = False  # refuse a challenger whose difference from the champion is within noise
    runtime: Literal["torch", "onnx"] = "torch"  # what the registered model predicts with (tasks.export)
    quantize: Literal["auto", "int8", "int8-weights", "none"] = "auto"  # the ONNX graphs', when runtime is onnx
    # the gate refuses a challenger not trained privately (finetune.privacy) within this epsilon; null: any model
    max_epsilon: float | None = Field(None, gt=0)


MAX_TRIALS = 32  # a grid expanding to more trials is refused: each trial is a whole fine-tuning run


class TrialsParams(Section):
    """`nichetune trials`: a grid over finetune keys, one trial per combination, run in parallel on Dask; the
    best on validation rows carved from the training rows (never the holdout) is evaluated and registered."""

    grid: dict[str, list[Any]] = {"finetune.learning_rate": [0.001, 0.003], "finetune.strategy": ["lora", "head"]}
    validation_fraction: float = Field(0.2, gt=0, lt=1)  # of each label's training rows; trials are scored there
    metric: Literal["accuracy", "macro_f1"] = "macro_f1"  # picks the best trial; ties: the first in grid order
    address: str | None = None  # a running Dask scheduler (tcp://host:8786); None: a LocalCluster here
    workers: int = Field(2, ge=1)  # LocalCluster worker processes, one thread each

    def combinations(self) -> list[dict[str, Any]]:
        """The cartesian product of the grid in its order (the last key varies fastest): one dict per trial."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]


class Params(Section):
    base: BaseParams = BaseParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    finetune: FinetuneParams = FinetuneParams()
    adapt: AdaptParams = AdaptParams()
    self_training: SelfTrainingParams = SelfTrainingParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    trials: TrialsParams = TrialsParams()
    suggest: SuggestParams = SuggestParams()

    # `validate` and `register` are BaseModel attributes, so those two fields carry a trailing underscore.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _segments_are_kept(self) -> "Params":
        column = self.evaluate.segment_column
        if column and column not in self.ingest.metadata_columns:
            kept = ", ".join(self.ingest.metadata_columns) or "none"
            raise ValueError(f"evaluate.segment_column {column!r} is not kept by ingest (metadata_columns: "
                             f"{kept}); add it to ingest.metadata_columns or pick one of those")
        return self

    @model_validator(mode="after")
    def _private_training_holds(self) -> "Params":
        """With finetune.privacy, nothing may train on the rows outside the accountant's count."""
        cfg = self.finetune
        if not cfg.privacy.enabled:
            return self
        refusals = [
            (cfg.strategy in NOT_PRIVATE, f"finetune.strategy {cfg.strategy} cannot be trained privately: "
                                          f"{NOT_PRIVATE.get(cfg.strategy)}; use head, lora or ia3"),
            (cfg.validation_fraction > 0, "finetune.validation_fraction > 0: validation rows would choose the epoch "
                                          "and the temperature outside the budget; set it to 0"),
            (cfg.gradient_accumulation > 1, "finetune.gradient_accumulation > 1: each private step is one Poisson-"
                                            "sampled batch; raise batch_size instead"),
            (cfg.augment != "none", "finetune.augment makes copies of a row, which the per-row bound does not "
                                    "cover; set it to none"),
            (cfg.class_balance != "none", "finetune.class_balance reads the training rows' label counts outside "
                                          "the budget; set it to none"),
            (self.adapt.objective != "none", "adapt.objective would train the backbone on unlabeled texts outside "
                                             "the budget; set it to none"),
            (self.self_training.rounds > 0, "self_training.rounds would train again on the model's own labels, "
                                            "spending the budget twice; set it to 0"),
        ]
        for refused, reason in refusals:
            if refused:
                raise ValueError(f"finetune.privacy.epsilon is {cfg.privacy.epsilon:g}, but {reason}")
        return self

    @model_validator(mode="after")
    def _every_trial_parses(self) -> "Params":
        if self.trials.grid:  # a trial's own params are checked with an empty grid: no recursion
            try:
                for overrides in _trial_combinations(self.trials):
                    trial_params(self, overrides)
            except ParamsError as err:
                raise ValueError(str(err)) from None  # reported by parse_params as one line
        return self

    @property
    def validate(self) -> ValidateParams:  # type: ignore[override]
        return self.validate_

    @property
    def register(self) -> RegisterParams:  # type: ignore[override]
        return self.register_

    def as_dict(self) -> dict:
        """The params as params.yaml spells them."""
        return self.model_dump(by_alias=True, mode="json")

    def digest(self) -> str:
        """A short, stable hash of every resolved value, to tell runs with the same params apart."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _trial_combinations(cfg: TrialsParams) -> list[dict[str, Any]]:
    """The grid's combinations, after checking its keys (finetune keys only), its lists and its size."""
    known = _field_names(FinetuneParams)
    for key, values in cfg.grid.items():
        section, _, name = key.partition(".")
        if section not in _section_names() or not name or (section == "finetune" and name not in known):
            raise ParamsError(f"trials.grid: unknown key {key!r}; grid keys are finetune.KEY, with KEY one of: "
                             f"{', '.join(known)}")
        if section != "finetune":
            raise ParamsError(f"trials.grid: {key!r} cannot vary between trials: only finetune keys do (ingest, "
                             f"validate and split run once before the trials, evaluate and register once after)")
        if not values or len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ParamsError(f"trials.grid: {key} = {values!r}: list each value once, at least one value")
    count = math.prod(len(values) for values in cfg.grid.values())
    if count > MAX_TRIALS:
        sizes = " x ".join(str(len(values)) for values in cfg.grid.values())
        raise ParamsError(f"trials.grid expands to {count} trials ({sizes}); at most {MAX_TRIALS}: shorten a list")
    return cfg.combinations()


def trial_params(params: Params, overrides: dict[str, Any]) -> Params:
    """The params of one trial: `overrides` ({"finetune.KEY": value}) applied to `params` and validated."""
    raw = params.as_dict()
    raw["trials"]["grid"] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        raw[section][name] = value
    trial = parse_params(raw, source="trials.grid")
    return trial.model_copy(update={"trials": params.trials})  # the registered run shows the whole search


class Paths(BaseModel):
    """Where each stage reads and writes; derived from the project root and `base.workdir` only."""

    model_config = ConfigDict(frozen=True)
    root: Path
    workdir: Path

    @classmethod
    def of(cls, root: Path, params: Params) -> "Paths":
        root = Path(root).resolve()
        return cls(root=root, workdir=root / params.base.workdir)

    def stage(self, name: str) -> Path:
        """The output folder of one stage (what dvc.yaml names as `${base.workdir}/<stage>`)."""
        return self.workdir / name

    @property
    def mlflow_db(self) -> Path:
        return self.workdir / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.workdir / "mlflow" / "artifacts"


def load_params(path: Path, overrides: list[str] | None = None) -> Params:
    """Read params.yaml, apply `section.key=value` overrides, and validate everything before any work."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found; pass --params FILE or run from the project folder") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({_one_line(err)}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot be read ({_one_line(err)}); pass a UTF-8 YAML file") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected sections such as 'finetune:', found a {type(raw).__name__}")
    for section, values in raw.items():  # a section whose keys are all commented out means "defaults"
        if values is None:
            raw[section] = {}
    for item in overrides or []:
        _apply_override(raw, item, path)
    return parse_params(raw, source=str(path))


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping; the error names the key, the bad value and what is allowed."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err.errors()[0], raw, source)) from None


def _apply_override(raw: dict, item: str, source: Path) -> None:
    """SECTION.KEY=VALUE, or deeper for a nested key (finetune.privacy.epsilon=8); VALUE is read as YAML."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ParamsError(f"--set {item!r}: expected SECTION.KEY=VALUE, for example finetune.epochs=3")
    section, *inner, name = parts
    if section not in _section_names():
        known = ", ".join(_section_names())
        raise ParamsError(f"--set {item!r}: unknown section {section!r}; sections are: {known}")
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        raise ParamsError(f"{source}: section {section!r} must be a mapping of keys to values")
    for depth, part in enumerate(inner, start=2):
        if target.get(part) is None:  # absent, or a nested section whose keys are all commented out
            target[part] = {}
        target = target[part]
        if not isinstance(target, dict):
            raise ParamsError(f"--set {item!r}: {'.'.join(parts[:depth])} holds a value, not keys; set it whole, "
                              f"for example {'.'.join(parts[:depth])}=VALUE")
    target[name] = _set_value(text)


def _set_value(text: str):
    """A --set value read as YAML (numbers, lists, mappings), or as the text itself where YAML reads none from
    it: `,` is a syntax error there and `|` an empty block, yet both are delimiters a user means."""
    if not text.strip():
        return text or None  # a tab is a delimiter; nothing at all is null
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text.strip()
    return text.strip() if value in ("", None) and text.strip() not in ("null", "~", '""', "''") else value


def _section_names() -> list[str]:
    return _field_names(Params)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _describe(error: dict, raw: dict, source: str) -> str:
    loc = [str(part) for part in error["loc"]]
    if not loc:  # a check across sections: its message names the keys
        return f"{source}: {error['msg'].removeprefix('Value error, ')}"
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        allowed = _field_names(_model_at(loc[:-1]))
        return f"{source}: unknown key {key!r}; allowed keys here: {', '.join(allowed)}"
    value = _lookup(raw, loc, error.get("input"))  # a default checked against another key is not in raw
    return f"{source}: {key} = {value!r} is not allowed: {error['msg'].removeprefix('Value error, ')}"


def _model_at(loc: list[str]) -> type[BaseModel]:
    """The params model that holds the keys at `loc` (a path of params.yaml names)."""
    model = Params
    for part in loc:
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        model = fields[part].annotation
    return model


def _lookup(raw: dict, loc: list[str], missing: Any = None):
    value = raw
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return missing
    return value


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
