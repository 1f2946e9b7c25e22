"""Benchmark: training samples per second of the default's fine-tuning against a plain PyTorch loop, on a GPU.

    nichetune bench gpu [--rows 2048] [--epochs 2] [--repeats 3] [--device cuda] [--batch-size N]
                        [--max-length N] [--piece-tokens none N ...] [--out FILE] [--note TEXT] [--data DIR]

Rows: the first `--rows` of banking77's training texts (banking77/ under --data, default ../shared/data), 77
intents. Both loops train the same model (`tasks.finetune.build_model` with params.yaml's finetune section and
the strategy whose network it trains: `full`, auto's fine-tuned candidate), on the same rows in batches of the
same size, padded per batch to the same `max_length`, in the same precision (bf16 autocast on CUDA), for
`--epochs` epochs:
- nichetune: `tasks.finetune.finetune` itself, with params.yaml's finetune section but no early-stopping share and
  no work dir (no checkpoints), so that only training is timed: its seeded batch order, layer-wise learning rates,
  schedule, class handling and pair loss included. Samples per second is `FinetuneResult.samples_per_second`
  (rows seen / the loop's wall time, weights already on the device).
- plain: shuffle, tokenize, forward, cross-entropy, backward, AdamW step at the same learning rate; nothing else,
  one device synchronisation at the end.
One untimed warm-up of each first (CUDA context, kernels), then the two alternate `--repeats` times; the figures
are medians, and the ratio is nichetune / plain. `--batch-size` and `--max-length` replace params.yaml's for both
loops (issue 54's goal is read at 256 and 128). `--piece-tokens` runs the nichetune loop once per budget in each
repeat, with tasks.training.GPU_PIECE_TOKENS set to it (`none`: the whole padded batch at once, the default), to
find whether length pieces pay on the device; each budget gets its own median and ratio. `--device cpu` checks
the harness on a machine without a GPU and needs `--out`, so that the GPU figures in benchmarks/results/gpu.json
are never replaced by CPU ones."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.sources import add_data_option, dataset_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
NICHETUNE, PLAIN = "nichetune (params.yaml default)", "plain PyTorch loop"


def training_rows(rows: int, folder: Path) -> pd.DataFrame:
    """The first `rows` of banking77's train.csv in `folder`, as text and label."""
    frame = pd.read_csv(folder / "train.csv").head(rows)
    return pd.DataFrame({"text": frame["text"].astype(str), "label": frame["category"]})


def nichetune_loop(train: pd.DataFrame, cfg, seed: int) -> float:
    """Samples per second of the pipeline's own training function."""
    from tasks.finetune import finetune

    with tempfile.TemporaryDirectory() as folder:
        return finetune(train, cfg, seed, Path(folder)).samples_per_second


def plain_loop(train: pd.DataFrame, cfg, seed: int) -> float:
    """Samples per second of the shortest honest loop over the same model, rows, batches and precision."""
    import torch
    from transformers import AutoTokenizer

    from tasks.training import build_model
    from tasks.model import backbone_path, resolve_device

    torch.manual_seed(seed)
    device = resolve_device(cfg.device)
    labels = sorted(train["label"].unique())
    tokenizer = AutoTokenizer.from_pretrained(backbone_path(cfg.backbone))
    model = build_model(cfg, labels).to(device.device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    texts = train["text"].tolist()
    targets = torch.tensor([labels.index(label) for label in train["label"]])
    started, seen = time.perf_counter(), 0
    for _ in range(cfg.epochs):
        for index in torch.randperm(len(texts)).split(cfg.batch_size):
            batch = tokenizer([texts[i] for i in index.tolist()], padding=True, truncation=True,
                              max_length=cfg.max_length, return_tensors="pt").to(device.device)
            with device.autocast():
                logits = model.classify(model.embed(**batch))
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[index].to(device.device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(index)
    if device.device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def variant_name(budget: int | None) -> str:
    """The nichetune loop's name in the results: the default (whole batches) keeps the name earlier runs used."""
    return NICHETUNE if budget is None else f"nichetune, length pieces of {budget} tokens"


def measure(rows: int, epochs: int, repeats: int, device: str, folder: Path, backbone: str | None = None,
            batch_size: int | None = None, max_length: int | None = None,
            piece_budgets: tuple[int | None, ...] = (None,)) -> dict:
    """Warm-up, then the loops alternating (each piece budget of the nichetune loop, then plain); medians and the
    ratios."""
    import torch
    import transformers

    from benchmarks import quality
    from tasks import training
    from tasks.config import FinetuneParams
    from tasks.model import resolve_device

    settings = yaml.safe_load((REPO / "params.yaml").read_text())["finetune"]
    settings.update(epochs=epochs, device=device, validation_fraction=0.0, strategy=quality.tuned_strategy())
    settings.update({key: value for key, value in (("backbone", backbone), ("batch_size", batch_size),
                                                   ("max_length", max_length)) if value is not None})
    cfg = FinetuneParams.model_validate(settings)
    resolved = resolve_device(device)
    train = training_rows(rows, folder)
    warm_up = FinetuneParams.model_validate({**settings, "epochs": 1})
    nichetune_loop(train.head(4 * cfg.batch_size), warm_up, 0)
    plain_loop(train.head(4 * cfg.batch_size), warm_up, 0)
    names = [variant_name(budget) for budget in piece_budgets]
    runs = []
    try:
        for seed in range(repeats):
            run = {}
            for budget, name in zip(piece_budgets, names):
                training.GPU_PIECE_TOKENS = budget
                run[name] = nichetune_loop(train, cfg, seed)
            run[PLAIN] = plain_loop(train, cfg, seed)
            runs.append(run)
    finally:
        training.GPU_PIECE_TOKENS = None
    medians = {name: statistics.median(run[name] for run in runs) for name in (*names, PLAIN)}
    name = torch.cuda.get_device_name(0) if resolved.device.type == "cuda" else "CPU"
    return {"device": f"{name}, {resolved.name}", "torch": torch.__version__,
            "transformers": transformers.__version__, "strategy": cfg.strategy, "rows": len(train), "epochs": epochs,
            "batch_size": cfg.batch_size, "max_length": cfg.max_length, "repeats": runs,
            "samples_per_second": medians, "ratio": medians[names[0]] / medians[PLAIN],
            "ratios": {name: medians[name] / medians[PLAIN] for name in names}}


def piece_budget(value: str) -> int | None:
    if value.lower() == "none":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of tokens, or none (whole batches)")
    return int(value)


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048, help="banking77 training rows (default 2048)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: params.yaml's)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text (default: params.yaml's)")
    parser.add_argument("--piece-tokens", nargs="+", type=piece_budget, default=[None], metavar="none|N",
                        help="the nichetune loop once per GPU length-piece budget (none: whole batches)")
    parser.add_argument("--backbone", default=None, help=argparse.SUPPRESS)  # tests: a tiny local model
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/gpu.json)")
    parser.add_argument("--note", default=None, help="how this run differs from a plain install, for the report")
    add_data_option(parser)
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    if args.device == "cpu" and args.out is None:
        parser.error("--device cpu only checks the harness: give --out FILE (gpu.json keeps GPU figures)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is visible: run this on a GPU machine (--device cpu --out FILE checks the "
                     "harness here)")
    from tasks.runtime import quiet_offline_defaults

    folder = dataset_dir(args.data, "banking77")
    quiet_offline_defaults()
    result = {"command": " ".join(["nichetune bench gpu", *argv]), "date": time.strftime("%Y-%m-%d"),
              **measure(args.rows, args.epochs, args.repeats, args.device, folder, args.backbone, args.batch_size,
                        args.max_length, tuple(args.piece_tokens))}
    if args.note:
        result["note"] = args.note
    out = args.out or RESULTS / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("device", "samples_per_second", "ratio")}, indent=2))
    return result


if __name__ == "__main__":
    main()
