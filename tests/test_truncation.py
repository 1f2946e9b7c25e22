"""Long texts are read, not thrown away: ingest and validation keep a real 7,652-character complaint, and a text
longer than the backbone reads is cut by `finetune.truncation` (its head, or its head and tail) the same way in
training, the frozen-feature cache and prediction, which reads the mode from the saved model."""

from __future__ import annotations

import json
import typing

import pandas as pd
import pytest
import torch

from tasks import features as frozen
from tasks.config import FinetuneParams, IngestParams, Truncation, ValidateParams
from tasks.finetune import finetune
from tasks.inference import HEAD_SHARE, TRUNCATIONS, encode, head_and_tail, token_rows
from tasks.ingest import ingest_batch
from tasks.layout import CACHE_DIR
from tasks.model import MODEL_CARD, Classifier, backbone_path
from tasks.training import Rows, token_lengths
from tasks.validate import validate_frame
from tests.conftest import SLICES, cfpb_sample, make_project, project_params

COMPLAINTS = pd.read_csv(SLICES / "cfpb_payday_2023" / "complaints.csv")
LONGEST = COMPLAINTS.loc[COMPLAINTS["text"].str.len().idxmax()]  # a real complaint of 7,652 characters


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backbone_path("minilm"))


def whole(tokenizer, text: str) -> list[int]:
    return tokenizer(text, truncation=False, verbose=False)["input_ids"]


def test_the_longest_real_complaint_is_longer_than_the_old_limit_and_the_backbone():
    assert len(LONGEST["text"]) > 5000  # quarantined by the former default max_text_chars


def test_head_tail_keeps_the_first_and_the_last_tokens_of_a_long_complaint(tokenizer):
    ids = whole(tokenizer, LONGEST["text"])
    assert len(ids) > 1000
    (row,) = token_rows(tokenizer, [LONGEST["text"]], 64, "head_tail")
    kept = row["input_ids"]
    head = round(62 * HEAD_SHARE)  # 64 less [CLS] and [SEP]
    assert len(kept) == 64 and len(row["attention_mask"]) == len(row["token_type_ids"]) == 64
    assert kept[0] == tokenizer.cls_token_id and kept[-1] == tokenizer.sep_token_id
    assert kept[1 : 1 + head] == ids[1 : 1 + head]  # the start of the complaint
    assert kept[1 + head : -1] == ids[-(62 - head) - 1 : -1]  # and its very end, up to the last word
    tail = tokenizer.decode(kept[-8:-1]).replace(" ", "").replace("##", "")
    assert "".join(LONGEST["text"].lower().split()).endswith(tail)  # the complaint's last words


def test_head_keeps_the_first_tokens_only(tokenizer):
    ids = whole(tokenizer, LONGEST["text"])
    (row,) = token_rows(tokenizer, [LONGEST["text"]], 64, "head")
    assert row["input_ids"] == ids[:63] + [tokenizer.sep_token_id]
    special = tokenizer(LONGEST["text"], return_special_tokens_mask=True, verbose=False)
    mask = special.pop("special_tokens_mask")
    # a head share of 1 is the head cut: the truncation benchmark's head is the product's
    assert head_and_tail(dict(special), mask, 64, head_share=1.0)["input_ids"] == row["input_ids"]


def test_texts_that_fit_are_unchanged_by_either_mode(tokenizer):
    texts = [text for text in COMPLAINTS["text"] if len(whole(tokenizer, text)) <= 128][:20]
    assert len(texts) == 20
    head, head_tail = encode(tokenizer, texts, 128, "head"), encode(tokenizer, texts, 128, "head_tail")
    assert head.keys() == head_tail.keys()
    assert all(torch.equal(head[key], head_tail[key]) for key in head)


def test_in_a_mixed_batch_only_the_long_text_differs(tokenizer):
    texts = ["I was charged a late fee twice", LONGEST["text"]]
    head, head_tail = encode(tokenizer, texts, 64, "head"), encode(tokenizer, texts, 64, "head_tail")
    assert torch.equal(head["input_ids"][0], head_tail["input_ids"][0])
    assert not torch.equal(head["input_ids"][1], head_tail["input_ids"][1])
    assert head_tail["input_ids"].shape == (2, 64) and int(head_tail["attention_mask"][1].sum()) == 64


def test_token_counts_are_the_same_for_every_mode(tokenizer):
    rows = Rows(COMPLAINTS["text"].tolist()[:30], torch.zeros(30, dtype=torch.long))
    counts = token_lengths(rows, tokenizer, 96)
    cut = {mode: [len(row["input_ids"]) for row in token_rows(tokenizer, rows.texts, 96, mode)]
           for mode in TRUNCATIONS}
    assert counts.tolist() == cut["head"] == cut["head_tail"] and max(cut["head"]) == 96


def test_an_unknown_mode_names_the_known_ones(tokenizer):
    with pytest.raises(ValueError, match="'middle' is not one of head, head_tail"):
        token_rows(tokenizer, ["a text"], 32, "middle")


def test_the_config_offers_exactly_the_modes_the_tokenizing_helper_knows():
    assert typing.get_args(Truncation) == TRUNCATIONS
    with pytest.raises(Exception, match="head_tail"):
        FinetuneParams(truncation="tail")


def test_the_feature_cache_key_changes_with_the_mode(tiny_backbone):
    texts = COMPLAINTS["text"].tolist()[:5]
    keys = {mode: frozen.cache_key(str(tiny_backbone), 2, True, 32, mode, texts) for mode in TRUNCATIONS}
    assert keys["head"] != keys["head_tail"]
    assert keys["head"] == frozen.cache_key(str(tiny_backbone), 2, True, 32, "head", list(texts))


@pytest.fixture(scope="module")
def long_train():
    """4 issues x 6 real complaints, most of them longer than the 32 tokens the tiny model reads."""
    return cfpb_sample(per_class=6).rename(columns={"issue": "label"})[["text", "label"]]


@pytest.mark.slow
def test_a_model_trained_with_head_tail_predicts_with_head_tail(long_train, tiny_backbone, tmp_path):
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=32,
                         truncation="head_tail", validation_fraction=0)  # every row trains: one cache file
    result = finetune(long_train, cfg, seed=3, out_dir=tmp_path / "out", work_dir=tmp_path / "work")
    # the frozen features were computed (and cached) with the model's own cut
    texts = long_train["text"].astype(str).tolist()
    key = frozen.cache_key(str(tiny_backbone), 2, True, 32, "head_tail", texts)
    assert (tmp_path / "work" / CACHE_DIR / f"{key}.pt").is_file()
    assert json.loads((result.model_dir / MODEL_CARD).read_text())["truncation"] == "head_tail"
    classifier = Classifier(result.model_dir)
    assert classifier.truncation == "head_tail"
    ((_, batch),) = list(classifier._batches([LONGEST["text"]]))
    assert torch.equal(batch["input_ids"], encode(classifier.tokenizer, [LONGEST["text"]], 32, "head_tail")["input_ids"])
    read_tail = classifier.predict_proba([LONGEST["text"]])
    classifier.truncation = "head"
    assert not torch.allclose(torch.as_tensor(read_tail), torch.as_tensor(classifier.predict_proba([LONGEST["text"]])))


@pytest.mark.slow
def test_a_model_saved_without_the_key_reads_the_head(long_train, tiny_backbone, tmp_path):
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=32)
    result = finetune(long_train, cfg, seed=3, out_dir=tmp_path)
    card_path = result.model_dir / MODEL_CARD
    card = json.loads(card_path.read_text())
    assert card.pop("truncation") == "head"
    card_path.write_text(json.dumps(card))  # as models saved before the key existed
    assert Classifier(result.model_dir).truncation == "head"


def test_validation_keeps_a_long_real_complaint_by_default():
    texts = [LONGEST["text"], *COMPLAINTS["text"][:7]]
    frame = pd.DataFrame({"text": texts, "label": ["long"] * 4 + ["short"] * 4})
    checks, _ = validate_frame(frame, ValidateParams(min_examples_per_class=3))
    (length,) = [check for check in checks if check.name.startswith("text at most")]
    assert length.name == "text at most 100,000 characters" and length.success


@pytest.mark.slow
def test_ingest_keeps_a_long_real_complaint_by_default(tmp_path):
    project = make_project(tmp_path / "project", cfpb_sample(per_class=3), project_params("unused"))
    others = cfpb_sample(per_class=3)
    rows = pd.concat([others[others["complaint_id"] != LONGEST["complaint_id"]], LONGEST.to_frame().T])
    source = tmp_path / "export.csv"
    rows[["complaint_id", "date_received", "text", "issue"]].to_csv(source, index=False)
    cfg = IngestParams(dataset="complaints", path=None, label_column="issue", timestamp_column="date_received",
                       id_column="complaint_id")
    report = ingest_batch(cfg, [], project, source, announce=False)
    assert report.accepted == len(rows) and report.quarantined == 0
    assert pd.read_parquet(project / report.batch)["text"].str.len().max() > 5000
