"""Domain adaptation on unlabeled texts: each objective really trains the tiny BERT, the result loads like any
backbone, it is cached per backbone, corpus, settings and seed, and a model trained from it keeps working
once the cache is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import adapt
from tasks.adapt import ADAPTED_DIR, PROVENANCE_FILE, adapted_backbone, embed_base
from tasks.config import AdaptParams, FinetuneParams
from tasks.errors import DataError
from tasks.finetune import finetune
from tasks.model import BASE_DIR, MODEL_CARD, forget_bases, load_encoder, resolve_device
from tasks.progress import QUIET_ENV
from tasks.portfolio import load_classifier
from tests.conftest import cfpb_sample

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

OBJECTIVES = ["mlm", "tsdae", "simcse"]
FEW = {"steps": 3, "batch_size": 4, "max_length": 32}  # a few real steps: seconds on the tiny BERT


@pytest.fixture(scope="module")
def pool() -> list[str]:
    """Real complaint texts, standing in for a team's unlabeled tickets."""
    return cfpb_sample(per_class=10, classes=4)["text"].str.slice(0, 300).tolist()


def adapt_tiny(texts, tiny_backbone, cache: Path, objective: str = "simcse", corpus_version: str = "pool-1",
               seed: int = 5, **settings) -> adapt.Adapted:
    cfg = AdaptParams(objective=objective, **{**FEW, **settings})
    return adapted_backbone(texts, corpus_version, cfg, str(tiny_backbone), seed, cache, resolve_device("cpu"))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_encoder(str(folder)).state_dict()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_a_backbone_that_loads_like_the_original(objective, pool, tiny_backbone, tmp_path):
    from transformers import AutoTokenizer

    adapted = adapt_tiny(pool, tiny_backbone, tmp_path, objective)
    before, after = weights(tiny_backbone), weights(adapted.path)
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert "embeddings.word_embeddings.weight" in changed and "encoder.layer.1.output.dense.weight" in changed
    assert changed >= {name for name in before if not name.startswith("pooler.")}  # mean pooling: no pooler trained
    assert AutoTokenizer.from_pretrained(str(adapted.path)).vocab == AutoTokenizer.from_pretrained(
        str(tiny_backbone)).vocab
    assert adapted.path.parent == tmp_path / ADAPTED_DIR
    record = adapted.provenance
    assert (record["objective"], record["steps"], record["texts"], record["corpus_version"]) == (
        objective, 3, len(pool), "pool-1")
    assert record["cached"] is False and record["path"] == str(adapted.path) and record["seconds"] > 0
    assert json.loads((adapted.path / PROVENANCE_FILE).read_text())["key"] == record["key"]


def test_the_same_key_is_served_from_the_cache_and_any_change_trains_again(pool, tiny_backbone, tmp_path):
    first = adapt_tiny(pool, tiny_backbone, tmp_path)
    again = adapt_tiny(pool, tiny_backbone, tmp_path)
    assert again.path == first.path and again.provenance["cached"] is True
    assert {k: v for k, v in again.provenance.items() if k != "cached"} == \
        {k: v for k, v in first.provenance.items() if k != "cached"}
    others = [adapt_tiny(pool, tiny_backbone, tmp_path, corpus_version="pool-2"),
              adapt_tiny(pool, tiny_backbone, tmp_path, learning_rate=1e-4),
              adapt_tiny(pool, tiny_backbone, tmp_path, steps=2),
              adapt_tiny(pool, tiny_backbone, tmp_path, seed=6)]
    assert all(not other.provenance["cached"] for other in others)
    assert len({first.path, *(other.path for other in others)}) == 5
    assert sorted(p.name for p in (tmp_path / ADAPTED_DIR).iterdir()) == sorted(
        p.name for p in [first.path, *(other.path for other in others)])  # no temporary folder left


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_same_seed_gives_the_same_weights_and_another_seed_others(objective, pool, tiny_backbone, tmp_path):
    one = weights(adapt_tiny(pool, tiny_backbone, tmp_path / "a", objective).path)
    two = weights(adapt_tiny(pool, tiny_backbone, tmp_path / "b", objective).path)
    other = weights(adapt_tiny(pool, tiny_backbone, tmp_path / "c", objective, seed=6).path)
    assert all(torch.equal(one[name], two[name]) for name in one)
    assert not torch.equal(one["embeddings.word_embeddings.weight"], other["embeddings.word_embeddings.weight"])


def test_a_pool_larger_than_max_texts_is_sampled_down_with_the_seed(pool, tiny_backbone, tmp_path):
    adapted = adapt_tiny(pool, tiny_backbone, tmp_path, max_texts=7)
    assert (adapted.provenance["texts"], adapted.provenance["corpus_texts"]) == (7, len(pool))
    assert adapt.sample_texts(pool, 7, seed=5) == adapt.sample_texts(pool, 7, seed=5) != adapt.sample_texts(
        pool, 7, seed=6)


def test_an_empty_pool_is_one_line_saying_what_to_do(tiny_backbone, tmp_path):
    with pytest.raises(DataError, match=r"adapt.objective = 'tsdae'.*nichetune ingest FILE --unlabeled") as caught:
        adapt_tiny(["", "   "], tiny_backbone, tmp_path, "tsdae")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / ADAPTED_DIR).exists()


def test_objective_none_is_the_backbone_as_it_is(pool, tiny_backbone, tmp_path):
    adapted = adapt_tiny(pool, tiny_backbone, tmp_path, "none")
    assert adapted.path == Path(tiny_backbone) and adapted.provenance == {}


def test_a_run_that_fails_while_saving_leaves_nothing_under_the_cache_key(pool, tiny_backbone, tmp_path,
                                                                         monkeypatch):
    def disk_full(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(adapt, "save_backbone", disk_full)
    with pytest.raises(OSError, match="No space left"):
        adapt_tiny(pool, tiny_backbone, tmp_path)
    assert list((tmp_path / ADAPTED_DIR).iterdir()) == []
    monkeypatch.undo()
    assert adapt_tiny(pool, tiny_backbone, tmp_path).provenance["cached"] is False


def test_word_deletion_keeps_at_least_one_word_and_needs_no_nltk_data():
    import random

    rng = random.Random(0)
    damaged = [adapt.delete_words("my card was charged twice for one order", 0.6, rng) for _ in range(50)]
    assert all(damaged) and len(set(damaged)) > 10
    assert all(set(text.split()) <= set("my card was charged twice for one order".split()) for text in damaged)
    assert adapt.delete_words("refund", 0.99, rng) == "refund"


@pytest.fixture(scope="module")
def adapted_models(pool, tiny_backbone, tmp_path_factory) -> dict:
    """Models of three saved forms trained from an adapted backbone, and their probabilities before the cache
    folder is deleted: head (base unchanged), lora (adapter on the base), auto (members, one a head model)."""
    cache = tmp_path_factory.mktemp("cache")
    adapted = adapt_tiny(pool, tiny_backbone, cache, "tsdae")
    train = cfpb_sample(per_class=6, classes=2).rename(columns={"issue": "label"})[["text", "label"]]
    texts = cfpb_sample(per_class=2, classes=2)["text"].tolist()
    settings = {"head": {}, "lora": {}, "full": {},
                "auto": {"candidates": ["tfidf", "embedding", "head"], "refit": "off"}}
    models = {}
    for strategy, extra in settings.items():
        cfg = FinetuneParams(backbone=str(adapted.path), strategy=strategy, epochs=2, batch_size=8, max_length=32,
                             **extra)
        model_dir = finetune(train, cfg, seed=3, out_dir=tmp_path_factory.mktemp(strategy)).model_dir
        embed_base(model_dir, adapted.path)
        forget_bases()
        model = load_classifier(model_dir)
        models[strategy] = (model_dir, model.predict_proba(texts), model.embed(texts))
    forget_bases()
    shutil.rmtree(cache)
    return {"models": models, "texts": texts}


@pytest.mark.parametrize("strategy", ["head", "lora", "full", "auto"])
def test_a_model_trained_from_an_adapted_backbone_loads_after_the_cache_is_gone_and_moved(strategy, adapted_models,
                                                                                          tmp_path):
    model_dir, probs, vectors = adapted_models["models"][strategy]
    moved = Path(shutil.copytree(model_dir, tmp_path / "elsewhere"))
    forget_bases()
    model = load_classifier(moved)
    texts = adapted_models["texts"]
    np.testing.assert_allclose(model.predict_proba(texts), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.embed(texts), vectors, rtol=1e-5, atol=1e-6)  # drift's space: the adapted base
    assert json.loads((moved / MODEL_CARD).read_text())["base"] == BASE_DIR
    for card in moved.rglob(MODEL_CARD):
        assert (card.parent / json.loads(card.read_text())["base"]).resolve() == (moved / BASE_DIR).resolve()


def test_embedding_a_base_the_model_was_not_trained_from_is_refused(adapted_models, tiny_backbone, tmp_path):
    model_dir, _, _ = adapted_models["models"]["head"]
    copy = Path(shutil.copytree(model_dir, tmp_path / "copy"))
    with pytest.raises(ValueError, match="no model card builds on"):
        embed_base(copy, tiny_backbone)


def test_the_training_texts_are_adapted_on_without_a_pool_and_the_holdout_never(tiny_backbone, tmp_path, capsys,
                                                                                monkeypatch):
    from tasks.finetune import Unlabeled

    sample = cfpb_sample(per_class=6, classes=2).rename(columns={"issue": "label"})[["text", "label"]]
    train, holdout = sample.iloc[:10], sample.iloc[10:]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=32)
    tsdae = AdaptParams(objective="tsdae", **FEW)
    result = finetune(train, cfg, seed=3, out_dir=tmp_path / "own", work_dir=tmp_path / "work",
                      unlabeled=Unlabeled([], tsdae))
    record = result.unlabeled["adapt"]
    assert (record["corpus"], record["corpus_texts"], result.unlabeled["pool_rows"]) == ("pool+training", 10, 0)
    corpus = Unlabeled(["a pool text", train["text"].iloc[0]], tsdae).corpus(train)
    assert corpus == ["a pool text", *train["text"]]  # each text once, the pool first
    assert not set(corpus) & set(holdout["text"])
    pool_only = AdaptParams(objective="tsdae", corpus="pool", **FEW)
    assert Unlabeled(["a pool text"], pool_only).corpus(train) == ["a pool text"]
    assert Unlabeled(["a pool text"], AdaptParams()).corpus(train) == []  # objective none: no adaptation
    monkeypatch.delenv(QUIET_ENV, raising=False)
    capsys.readouterr()
    plain = finetune(train, cfg, seed=3, out_dir=tmp_path / "plain", unlabeled=Unlabeled([], pool_only))
    assert plain.unlabeled == {}  # an empty pool and corpus pool: trained from the packaged backbone
    assert ("adapt.corpus: pool set, but the dataset has no unlabeled texts (or none that is not labeled): trained "
            "without them; store some with `nichetune ingest FILE --unlabeled`") in capsys.readouterr().out
