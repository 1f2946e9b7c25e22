"""Export a saved model to a folder that predicts with onnxruntime and tokenizers alone (tasks/onnx_runtime.py,
copied in as nichetune_onnx.py): each transformer as an ONNX graph, the auto strategy's fast learners as their
weights, and the labels, temperatures and mixture weights beside them.

Quantization trades agreement with the torch model for speed, and how much depends on the model: dynamic int8
(activations too) is the fastest on a CPU, weight-only int8 keeps activations in float and agrees more closely,
`none` is exact. `auto` takes the fastest, measured on this machine, of those whose predictions agree with the
torch model on the check rows (the model's own holdout): the same label on at least MIN_AGREEMENT of them and
probabilities within MAX_DIFF on 99%. Which is fastest depends on the CPU: where weight-only int8 runs no faster
than float (as on the 2-core Xeon of BENCHMARKS.md), float is kept."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as installed
from pathlib import Path

import numpy as np

from tasks import onnx_runtime
from tasks.errors import NichetuneError
from tasks.inference import HEAD_SHARE

QUANTIZATIONS = ("auto", "int8", "int8-weights", "none")
LADDER = ("none", "int8-weights", "int8")  # what `auto` tries, most exact first
FASTER = 1.1  # how much faster than a more exact quantization a less exact one must run for `auto` to take it
TIMING_ROWS, TIMING_SECONDS = 500, 1.0  # `auto` times each quantization on check rows, repeated at least this long
MIN_AGREEMENT = 0.995  # share of check rows given the torch model's label
MAX_DIFF = 0.02  # the 99th percentile, over check rows, of the largest probability difference in a row
MAX_CHECK_ROWS = 2000
RUNTIME_FILE = "nichetune_onnx.py"
RUNTIME_PACKAGES = ("onnxruntime", "tokenizers", "numpy")  # everything the folder needs to predict
OPSET = 17


class ExportError(NichetuneError):
    """The model cannot be exported as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Parity:
    """How closely the exported model follows the torch model on the check rows."""

    rows: int
    agreement: float  # share of rows with the same label
    p99_diff: float  # 99th percentile of each row's largest absolute probability difference
    max_diff: float

    @property
    def holds(self) -> bool:
        return self.rows > 0 and self.agreement >= MIN_AGREEMENT and self.p99_diff <= MAX_DIFF

    def line(self) -> str:
        return (f"same label on {self.agreement:.2%} of {self.rows} check rows, probabilities within "
                f"{self.p99_diff:.3f} on 99% of them (largest difference {self.max_diff:.3f})")


@dataclass
class Export:
    folder: Path
    quantization: str
    parity: Parity | None
    tried: dict[str, dict] = field(default_factory=dict)  # each quantization tried: its parity (and `auto`'s speed)
    megabytes: float = 0.0


def measure(reference: np.ndarray, exported: np.ndarray) -> Parity:
    """How closely `exported` probabilities follow the `reference` (torch) ones, row by row."""
    if len(reference) == 0:
        return Parity(0, 0.0, 0.0, 0.0)
    diff = np.abs(np.asarray(reference, dtype=np.float64) - exported).max(axis=1)
    return Parity(len(reference), float((reference.argmax(1) == exported.argmax(1)).mean()),
                  float(np.quantile(diff, 0.99)), float(diff.max()))


# ---------------------------------------------------------------- torch networks as graphs


def _networks(model_dir: Path) -> tuple[dict, dict]:
    """The folder's model spec (labels, members and their weights, the mixture's temperature) and what goes into
    each of its folders: (torch module, graph spec, tokenizer folder) for each classifier member (logits out) and,
    when an embedding learner needs them, for the base backbone's sentence vectors; a learner's saved folder."""
    from tasks.model import MODEL_CARD, read_card
    from tasks.portfolio import AUTO

    card = read_card(model_dir)
    graphs, members = {}, []
    if card["strategy"] != AUTO:
        graphs["members/model"] = _classifier(model_dir, card)
        members.append({"name": card["strategy"], "weight": 1.0, "folder": "members/model"})
        return {"labels": card["labels"], "temperature": 1.0, "members": members}, graphs
    for member in card["members"]:
        folder = model_dir / member["folder"]
        target = f"members/{member['name']}"
        if (folder / MODEL_CARD).is_file():
            graphs[target] = _classifier(folder, read_card(folder))
        else:
            kind = json.loads((folder / onnx_runtime.LEARNER_FILE).read_text(encoding="utf-8"))["kind"]
            if kind == "embedding":
                graphs["vectors"] = _vectors(model_dir, card)
            graphs[target] = folder  # a learner's saved weights, copied as they are
        members.append({"name": member["name"], "weight": float(member["weight"]), "folder": target})
    spec = {"labels": card["labels"], "temperature": float(card.get("temperature", 1.0)), "members": members}
    if "vectors" in graphs:
        spec["vectors"] = "vectors"
    return spec, graphs


def _graph_spec(card: dict, tokenizer) -> dict:
    truncation = card.get("truncation", "head")
    return {"max_length": int(card["max_length"]), "truncation": truncation,
            "head_share": 1.0 if truncation == "head" else HEAD_SHARE, "pad_id": int(tokenizer.pad_token_id or 0)}


def _classifier(model_dir: Path, card: dict):
    """A classifier member as one module: its backbone (adapters merged into the weights) and head, logits out."""
    import torch
    from transformers import AutoTokenizer

    from tasks.model import Classifier, mean_pool, resolve_device

    classifier = Classifier(model_dir, resolve_device("cpu", "fp32"))  # the graph is traced in fp32
    if classifier.own_encoder is not None:
        encoder = classifier.own_encoder
    else:
        from tasks.model import base_folder, load_encoder

        encoder = load_encoder(base_folder(model_dir, card["base"]))
        if classifier.adapter is not None:
            from peft import PeftModel

            encoder = PeftModel.from_pretrained(encoder, str(model_dir / "adapter")).merge_and_unload()
    head = classifier.head

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = encoder.eval(), head.eval()

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(mean_pool(hidden, attention_mask))

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    spec = {**_graph_spec(card, tokenizer), "labels": card["labels"],
            "temperature": float(card.get("temperature", 1.0))}
    return Logits(), spec, model_dir


def _vectors(model_dir: Path, card: dict):
    """The base backbone's mean-pooled sentence vectors (what the embedding learner reads)."""
    import torch
    from transformers import AutoTokenizer

    from tasks.model import base_folder, load_encoder, mean_pool

    base = base_folder(model_dir, card["base"])
    encoder = load_encoder(base).eval()

    class Vectors(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return mean_pool(hidden, attention_mask)

    return Vectors(), _graph_spec(card, AutoTokenizer.from_pretrained(base)), Path(base)


def _to_onnx(module, path: Path) -> None:
    import warnings

    import torch

    example = torch.tensor([[101, 2054, 2003, 102], [101, 2054, 102, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "output": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python conditionals in the attention mask code
        torch.onnx.export(module, example, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["output"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def quantize(source: Path, target: Path, how: str) -> None:
    """`source` (a float graph) written to `target` quantized `how`."""
    import onnx

    root = logging.getLogger()  # the quantizer advises shape pre-processing on the root logger, every time
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        _quantize(source, target, how, onnx)
    finally:
        root.setLevel(level)


def _quantize(source: Path, target: Path, how: str, onnx) -> None:
    if how == "none":
        shutil.copyfile(source, target)
    elif how == "int8":  # dynamic: int8 weights per output channel, activations quantized per batch
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    elif how == "int8-weights":  # weights in int8 blocks of 32, activations stay in float
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)

        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    else:
        raise ExportError(f"quantization {how!r} is not one of {', '.join(QUANTIZATIONS)}")


# ---------------------------------------------------------------- the folder


def export_model(model_dir: Path, out: Path, quantization: str = "auto", check_texts: list[str] | None = None,
                 source: dict | None = None) -> Export:
    """Write `model_dir` (a saved nichetune model) to `out` as an ONNX folder; `check_texts` (real rows, e.g. the
    holdout's) measure parity with the torch model and let `auto` choose the quantization."""
    from tasks.model import resolve_device
    from tasks.portfolio import load_classifier

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    check_texts = list(check_texts or [])[:MAX_CHECK_ROWS]
    if quantization == "auto" and not check_texts:
        raise ExportError("quantization auto needs check rows to compare with the torch model; pass texts or "
                          "choose --quantize int8, int8-weights or none")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: already exists and is not empty; pass another --output or remove it")
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    # parity against the fp32 network, as any machine computes it (a CPU with bf16 units would otherwise run bf16)
    reference = (load_classifier(model_dir, resolve_device("cpu", "fp32")).predict_proba(check_texts)
                 if check_texts else None)
    spec, graphs = _networks(Path(model_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as scratch:
        scratch = Path(scratch)
        building, floats = scratch / "folder", scratch / "float"
        floats.mkdir()
        for target, made in graphs.items():
            folder = building / target
            folder.mkdir(parents=True)
            if isinstance(made, Path):  # a learner: its JSON and arrays are already the runtime's format
                for name in (onnx_runtime.LEARNER_FILE, onnx_runtime.ARRAYS_FILE):
                    shutil.copyfile(made / name, folder / name)
                continue
            module, graph_spec, tokenizer_dir = made
            _to_onnx(module, _float_graph(floats, target))
            shutil.copyfile(tokenizer_dir / onnx_runtime.TOKENIZER_FILE, folder / onnx_runtime.TOKENIZER_FILE)
            (folder / onnx_runtime.MEMBER_FILE).write_text(json.dumps(graph_spec, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(onnx_runtime.__file__, building / RUNTIME_FILE)
        tried, found = {}, {}
        order = LADDER if quantization == "auto" else (quantization,)
        for how in order:
            _write_graphs(graphs, floats, building, spec, how)
            if reference is None:
                break
            exported = onnx_runtime.load(building)
            found[how] = measure(reference, exported.predict_proba(check_texts))
            tried[how] = {**asdict(found[how]), "holds": found[how].holds}
            if quantization == "auto" and found[how].holds:
                tried[how]["rows_per_s"] = round(rows_per_second(exported, check_texts), 1)
        chosen = choose_quantization(tried) if quantization == "auto" else quantization
        if chosen != order[-1]:  # the folder holds the last one tried
            _write_graphs(graphs, floats, building, spec, chosen)
        parity = found.get(chosen)
        manifest = {"format": onnx_runtime.FORMAT, **spec, "quantization": chosen,
                    "parity": tried.get(chosen), "tried": tried, "source": source or {},
                    "requires": {package: installed(package) for package in RUNTIME_PACKAGES}}
        (building / onnx_runtime.MODEL_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (building / "README.md").write_text(readme(manifest), encoding="utf-8")
        building.rename(out) if not out.exists() else _move_into(building, out)
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) / 2**20
    return Export(out, chosen, parity, tried, round(size, 1))


def choose_quantization(tried: dict[str, dict]) -> str:
    """`auto`'s choice among the quantizations `tried` (all of LADDER): of those that kept parity, the most exact
    unless a less exact one ran FASTER times as fast on this machine; `none` when none kept it."""
    chosen = "none"
    for how in LADDER:
        entry = tried[how]
        if entry["holds"] and (not tried[chosen]["holds"]
                               or entry["rows_per_s"] > FASTER * tried[chosen]["rows_per_s"]):
            chosen = how
    return chosen


def verdict(how: str, tried: dict[str, dict], chosen: str) -> str:
    """Why quantization `how` was kept or not, in a few words (`tried` and `chosen` as choose_quantization's)."""
    if how == chosen:
        return "kept"
    if not tried[how]["holds"]:
        return (f"not kept: parity needs the same label on {MIN_AGREEMENT:.1%} of rows and probabilities within "
                f"{MAX_DIFF:g}")
    if LADDER.index(how) < LADDER.index(chosen):
        return f"not kept: {chosen} ran at least {FASTER:g}x as fast"
    return f"not kept: not {FASTER:g}x as fast as {chosen}"


def _write_graphs(graphs: dict, floats: Path, building: Path, spec: dict, how: str) -> None:
    """The folder's transformer graphs quantized `how`, and a model file naming it."""
    for target, made in graphs.items():
        if not isinstance(made, Path):
            quantize(_float_graph(floats, target), building / target / onnx_runtime.GRAPH_FILE, how)
    (building / onnx_runtime.MODEL_FILE).write_text(json.dumps(
        {"format": onnx_runtime.FORMAT, **spec, "quantization": how}, indent=2) + "\n", encoding="utf-8")


def rows_per_second(exported, texts: list[str]) -> float:
    """Throughput of `exported` (warmed by its parity pass) on up to TIMING_ROWS of `texts`, repeated for at least
    TIMING_SECONDS so that a small holdout still gives a steady figure."""
    texts = texts[:TIMING_ROWS]
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < TIMING_SECONDS:
        exported.predict_proba(texts)
        done += len(texts)
    return done / elapsed


def _float_graph(floats: Path, target: str) -> Path:
    """Where the float graph of the export's folder `target` waits to be quantized."""
    return floats / f"{target.replace('/', '_')}.onnx"


def _move_into(building: Path, out: Path) -> None:
    """`out` exists and is empty (checked above): the finished folder's contents go into it."""
    for path in building.iterdir():
        path.rename(out / path.name)


def readme(manifest: dict) -> str:
    """How to use the folder, for whoever receives it."""
    source = manifest["source"]
    where = f"{source['model']} version {source['version']}" if source.get("model") else "a nichetune model"
    parity = manifest.get("parity")
    checked = (f"On {parity['rows']} rows of the model's holdout it gave the torch model's label to "
               f"{parity['agreement']:.2%} of them, with probabilities within {parity['p99_diff']:.3f} on 99% of rows."
               if parity else "Its agreement with the torch model was not measured.")
    requires = " ".join(f"{package}=={version}" for package, version in manifest["requires"].items())
    members = ", ".join(f"{m['name']} ({m['weight']:g})" for m in manifest["members"])
    return f"""# {where}, exported for onnxruntime

{len(manifest['labels'])} labels; made of: {members}; transformer weights quantized: {manifest['quantization']}.
{checked}

## Install (no torch needed)

    pip install {requires}

## Predict

`nichetune_onnx.py` is in this folder: run Python here, or put the folder on the import path first.

    import sys; sys.path.insert(0, "path/to/this/folder")
    from nichetune_onnx import load
    model = load("path/to/this/folder")
    model.predict(["where is my card?"])         # one label per text
    model.predict_proba(["where is my card?"])   # calibrated probabilities, columns in model.labels order

or, one text per line (an empty line gets no label): `python nichetune_onnx.py . < texts.txt > predictions.csv`

`model.json` holds the labels, the members with their weights and the mixture's temperature; each folder under
`members/` holds an ONNX graph with its tokenizer, or a linear learner's weights (`learner.json`, `learner.npz`).
"""


# ---------------------------------------------------------------- `nichetune export`


def default_output(workdir: Path, name: str, version: str) -> Path:
    return Path(workdir) / "exports" / f"{name}-v{version}-onnx"


def export_registered(uri: str, tracking: str, workdir: Path, quantization: str = "auto",
                      output: Path | None = None) -> Export:
    """Export the registered version `uri` names (a `models:/` URI), checked on the holdout rows its run logged."""
    import pandas as pd

    from tasks.layout import HOLDOUT_ARTIFACT
    from tasks.predict import download_registered
    from tasks.tracking import registry_client

    with tempfile.TemporaryDirectory(prefix="nichetune-export-") as scratch:
        name, version, run_id, model_dir = download_registered(uri, tracking, scratch)
        output = Path(output) if output is not None else default_output(workdir, name, version)
        holdout = pd.read_parquet(registry_client(tracking).download_artifacts(run_id, HOLDOUT_ARTIFACT, scratch))
        return export_model(model_dir, output, quantization, holdout["text"].astype(str).tolist(),
                            source={"model": name, "version": version, "run_id": run_id, "tracking_uri": tracking})
