"""The fine-tune stage: train the model that `finetune.strategy` names on the split's training rows and save it
to <workdir>/finetune/model. One strategy trains in `tasks.training`; `auto` (a portfolio) in `tasks.auto`.
With unlabeled texts (`nichetune ingest FILE --unlabeled`), the backbone can first be adapted to them
(`adapt`, tasks.adapt) and the strategy can learn from its own confident labels of them (`self_training`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks import cores
from tasks.auto import train_auto
from tasks.config import AdaptParams, FinetuneParams, Params, Paths, SelfTrainingParams
from tasks.layout import CACHE_DIR, LOG_FILE, POOL_FILE, TRAIN_FILE, VERSION_FILE
from tasks.portfolio import AUTO
from tasks.progress import say
from tasks.training import FinetuneResult, train_strategy


@dataclass(frozen=True)
class Unlabeled:
    """The unlabeled texts a run may learn from (the split has removed every labeled text, holdout included),
    and what to do with them."""

    texts: list[str]
    adapt: AdaptParams = AdaptParams()
    self_training: SelfTrainingParams = SelfTrainingParams()
    provenance: dict = field(default_factory=dict)  # the pool's DVC version and batches

    def corpus(self, train: pd.DataFrame) -> list[str]:
        """The texts the backbone adapts on, each once: the pool and, with adapt.corpus pool+training, the
        training rows' texts without their labels. Empty when adaptation is off."""
        if self.adapt.objective == "none":
            return []
        own = train["text"].astype(str).tolist() if self.adapt.corpus == "pool+training" else []
        return list(dict.fromkeys([*self.texts, *own]))


def text_digest(texts: list[str]) -> str:
    """A corpus's identity for the adapted-backbone cache: its texts, in order."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()[:16]


def train_one(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path,
              work_dir: Path | None = None) -> FinetuneResult:
    """Train `finetune.strategy` on the training rows: one strategy or the `auto` portfolio."""
    if cfg.strategy == AUTO:
        return train_auto(train, cfg, seed, out_dir, work_dir)
    return train_strategy(train, cfg, seed, out_dir, work_dir)


def finetune(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path,
             work_dir: Path | None = None, unlabeled: Unlabeled | None = None) -> FinetuneResult:
    """Train on the training rows (columns text, label) and save the classifier to `out_dir`/model.
    `work_dir` holds the feature cache, the checkpoints and adapted backbones; None keeps neither. The training
    counts among the processes sharing this machine's cores (tasks.cores) while it runs."""
    with cores.claim():
        return _finetune(train, cfg, seed, out_dir, work_dir, unlabeled)


def _finetune(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path, work_dir: Path | None,
              unlabeled: Unlabeled | None) -> FinetuneResult:
    corpus = unlabeled.corpus(train) if unlabeled else []
    self_training = bool(unlabeled and unlabeled.texts and unlabeled.self_training.rounds)
    if unlabeled and not unlabeled.texts:
        unused = [setting for setting, on in (
            ("self_training.rounds", unlabeled.self_training.rounds),
            ("adapt.corpus: pool", unlabeled.adapt.objective != "none" and unlabeled.adapt.corpus == "pool")) if on]
        if unused:  # switched on, yet nothing to do it with: said, not silently skipped
            say(f"{' and '.join(unused)} set, but the dataset has no unlabeled texts (or none that is not labeled): "
                "trained without them; store some with `nichetune ingest FILE --unlabeled`")
    if not corpus and not self_training:
        return train_one(train, cfg, seed, out_dir, work_dir)
    record = {**unlabeled.provenance, "pool_rows": len(unlabeled.texts)}
    adapted = None
    if corpus:
        from tasks.adapt import adapted_backbone
        from tasks.model import resolve_device

        cache = (work_dir or out_dir) / CACHE_DIR
        adapted = adapted_backbone(corpus, text_digest(corpus), unlabeled.adapt, cfg.backbone, seed, cache,
                                   resolve_device(cfg.device, cfg.precision))
        cfg = cfg.model_copy(update={"backbone": str(adapted.path)})
        record["adapt"] = {**adapted.provenance, "corpus": unlabeled.adapt.corpus}
    if self_training:
        from tasks.selftrain import self_train

        result, record["self_training"] = self_train(train, unlabeled.texts, cfg, unlabeled.self_training, seed,
                                                     out_dir, work_dir, train_one)
    else:
        result = train_one(train, cfg, seed, out_dir, work_dir)
    if adapted is not None:
        from tasks.adapt import embed_base

        embed_base(result.model_dir, adapted.path)
    result = dataclasses.replace(result, unlabeled=record)
    (out_dir / LOG_FILE).write_text(json.dumps({**dataclasses.asdict(result), "model_dir": str(result.model_dir)},
                                               indent=2, default=str))
    return result


def read_unlabeled(params: Params, split_dir: Path, ingest_dir: Path) -> Unlabeled:
    """The split's unlabeled texts, with the DVC version and batches the ingest stage recorded for them."""
    pool = split_dir / POOL_FILE
    texts = pd.read_parquet(pool, columns=["text"])["text"].astype(str).tolist() if pool.is_file() else []
    version = ingest_dir / VERSION_FILE
    recorded = json.loads(version.read_text()).get("unlabeled", {}) if version.is_file() else {}
    provenance = {"pool_version": recorded.get("data_version"), "pool_batches": recorded.get("batches", [])}
    return Unlabeled(texts, params.adapt, params.self_training, provenance)


def run(params: Params, train_path: Path, paths: Paths, out_dir: Path | None = None) -> FinetuneResult:
    """Read the training rows (and the unlabeled texts beside them, when the split wrote any) and fine-tune into
    `out_dir` (default: the stage's folder); the workdir keeps the cache, the checkpoints and adapted backbones."""
    out_dir = out_dir or paths.stage("finetune")
    out_dir.mkdir(parents=True, exist_ok=True)
    unlabeled = read_unlabeled(params, train_path.parent, paths.stage("ingest"))
    return finetune(pd.read_parquet(train_path), params.finetune, params.base.seed, out_dir, paths.workdir,
                    unlabeled)


def run_stage(params: Params, paths: Paths) -> FinetuneResult:
    """The dvc.yaml stage: fine-tune on the split's training rows. A consent mark set after the split ran is
    honoured here too: `dvc repro` would otherwise train from the cached split."""
    from tasks.consent import refuse_if_marked

    refuse_if_marked(paths.root, params.ingest.dataset)
    return run(params, paths.stage("split") / TRAIN_FILE, paths)


def main() -> None:
    """`python -m tasks.finetune`: the dvc.yaml stage (and the way to try the stage alone on a GPU box)."""
    from tasks.stage import stage_main

    stage_main("finetune")


if __name__ == "__main__":
    main()
