"""Strategy auto: the fast learners (cross-validated, saved without pickle), temperature scaling, the choice of
mixture on validation rows, and the saved portfolio predicting through the same paths as any model."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from tasks import learners
from tasks.auto import choose, weight_grid
from tasks.calibration import apply_temperature, fit_temperature, log_loss, uncalibrated
from tasks.config import FinetuneParams, parse_params
from tasks.errors import ParamsError
from tasks.finetune import finetune
from tasks.model import MODEL_CARD, Classifier
from tasks.portfolio import Portfolio, load_classifier
from tasks.tracking import tracking_store
from tests.conftest import REPO, cfpb_sample

BANKING = REPO / "tests" / "data" / "banking77"


def banking(split: str, classes: int = 6) -> pd.DataFrame:
    """Real banking77 queries of the first `classes` intents in the test slice."""
    frame = pd.read_csv(BANKING / f"{split}.csv").rename(columns={"category": "label"})
    return frame[frame["label"].isin(sorted(frame["label"].unique())[:classes])].reset_index(drop=True)


def test_tfidf_learner_chooses_by_cross_validation_and_reloads_without_pickle(tmp_path):
    train, test = banking("train"), banking("test")
    learner = learners.fit_tfidf(train["text"].tolist(), train["label"].tolist(), seed=0)
    tried = learner.settings["cv_macro_f1"]
    assert len(tried) == len(learners.C_GRID)
    assert f"C={learner.settings['C']:g}" == max(tried, key=tried.get)
    assert [v.analyzer for v in learner.vectorizers] == ["word", "char_wb"]  # words and characters side by side
    probs = learner.predict_proba(test["text"].tolist())
    accuracy = np.mean(np.array(learner.labels)[probs.argmax(axis=1)] == test["label"])
    assert accuracy > 0.8  # six distinct intents: n-grams alone separate them well

    learners.save(learner, tmp_path / "tfidf")
    with np.load(tmp_path / "tfidf" / learners.ARRAYS_FILE, allow_pickle=False) as arrays:
        assert {"coef", "intercept", "idf0"} <= set(arrays.files)
    again = learners.load(tmp_path / "tfidf")
    np.testing.assert_allclose(again.predict_proba(test["text"].tolist()), probs, rtol=1e-6, atol=1e-9)


def test_the_learners_weigh_classes_as_the_baselines_do_which_changes_nothing_on_balanced_labels():
    from sklearn.linear_model import LogisticRegression

    train = banking("train").groupby("label").head(80).reset_index(drop=True)  # 80 rows of each intent
    texts, names = train["text"].tolist(), train["label"].tolist()
    features = learners._vectorizers()[0].fit_transform(texts)
    plain = LogisticRegression(C=10.0, max_iter=3000, solver=learners.solver_for(features)).fit(features, names)
    balanced = learners._fit_linear(features, names, 10.0)
    np.testing.assert_allclose(balanced.coef, plain.coef_, rtol=1e-5, atol=1e-6)
    # one intent cut to 4 rows: weighed, it keeps more of its probability on its own rows than unweighed
    small = train["label"].iloc[0]
    keep = (train["label"] != small) | (train.groupby("label").cumcount() < 4)
    few = train[keep]
    features = learners._vectorizers()[0].fit_transform(few["text"].tolist())
    plain = LogisticRegression(C=10.0, max_iter=3000, solver=learners.solver_for(features)).fit(features,
                                                                                               few["label"])
    balanced = learners._fit_linear(features, few["label"].tolist(), 10.0)
    mine = (few["label"] == small).to_numpy()
    column = balanced.labels.index(small)
    assert balanced.proba(features)[mine, column].mean() > plain.predict_proba(features)[mine, column].mean()


def test_a_label_with_one_row_skips_cross_validation_and_still_fits():
    texts = ["card lost", "card stolen", "card missing", "refund please", "refund now", "where is my refund",
             "exchange rate"]
    labels = ["card"] * 3 + ["refund"] * 3 + ["rate"]
    learner = learners.fit_tfidf(texts, labels, seed=0)
    assert learner.settings["cv_macro_f1"] == {}
    assert learner.predict_proba(["my card was stolen"]).shape == (1, 3)


def test_temperature_scaling_lowers_the_log_loss_of_overconfident_probabilities():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 400)
    correct = rng.random(400) < 0.6  # right 60% of the time, yet 97% sure every time
    predicted = np.where(correct, targets, (targets + 1) % 4)
    probs = np.full((400, 4), 0.01)
    probs[np.arange(400), predicted] = 0.97
    temperature = fit_temperature(probs, targets)
    assert temperature > 1
    assert log_loss(apply_temperature(probs, temperature), targets) < log_loss(probs, targets)
    assert (apply_temperature(probs, temperature).argmax(axis=1) == predicted).all()
    np.testing.assert_allclose(uncalibrated(apply_temperature(probs, temperature), temperature), probs, atol=1e-9)
    assert temperature == pytest.approx(fit_temperature(probs, targets, prior_sd=None), rel=0.01)  # 400 rows


def test_the_temperature_prior_keeps_a_few_rows_off_the_limits():
    from tasks.calibration import LIMITS

    targets = np.tile([0, 1], 8)  # 16 rows, as amazon with 8 per class cross-fits
    wrong = np.where(np.eye(2)[targets] == 1, 0.4, 0.6)  # mildly wrong on every row
    assert fit_temperature(wrong, targets, prior_sd=None) == pytest.approx(LIMITS[1], rel=1e-3)
    assert 1 < fit_temperature(wrong, targets) < LIMITS[1] / 2


def test_the_choice_takes_the_best_mixture_and_prefers_fewer_members_on_ties():
    assert len(weight_grid(3)) == 66 and all(abs(sum(w) - 1) < 1e-9 for w in weight_grid(3))
    targets = np.array([0, 1, 0, 1])
    sure = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    wrong = sure[:, ::-1]
    weights, scores = choose({"good": sure, "bad": wrong}, targets, "accuracy")
    assert weights == {"good": 1.0} and scores["accuracy"] == 1.0


@pytest.mark.parametrize("raw, message", [
    ({"candidates": ["tfidf", "svm"]}, "svm"),
    ({"candidates": ["full", "lora"]}, "at most one fine-tuning strategy"),
    ({"time_budget": 0}, "time_budget"),
    ({"refit": "sometimes"}, "refit"),
    ({"refit_epochs": 0}, "refit_epochs"),
])
def test_bad_auto_settings_fail_at_load_in_one_line(raw, message):
    with pytest.raises(ParamsError) as caught:
        parse_params({"finetune": raw})
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def auto_model(tmp_path_factory, tiny_backbone):
    train = cfpb_sample(per_class=20).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="auto", candidates=["tfidf", "embedding", "head"],
                         epochs=2, batch_size=8, max_length=64)
    return finetune(train, cfg, seed=0, out_dir=tmp_path_factory.mktemp("auto")), train


def test_auto_scores_every_candidate_on_validation_rows_and_saves_the_chosen_mixture(auto_model):
    result, train = auto_model
    assert result.strategy == "auto"
    assert [c["name"] for c in result.candidates] == ["tfidf", "embedding", "head"]
    # one carve would hold out 16 rows, too few to choose by: every row is scored once, in 5 folds
    assert (result.choice["validation_rows"], result.choice["folds"]) == (len(train), 5)
    weights = result.choice["weights"]
    assert weights and abs(sum(weights.values()) - 1) < 1e-9
    card = json.loads((result.model_dir / MODEL_CARD).read_text())
    assert {m["name"]: m["weight"] for m in card["members"]} == weights
    assert sorted(p.name for p in (result.model_dir / "members").iterdir()) == sorted(weights)
    assert card["temperature"] == pytest.approx(result.temperature)
    assert not (result.model_dir.parent / "candidates").exists()


def test_with_enough_validation_rows_one_carve_is_scored_and_the_fine_tuned_member_refitted(
        tiny_backbone, tmp_path, monkeypatch):
    from tasks import auto

    monkeypatch.setattr(auto, "MIN_HELD_ROWS", 10)  # 16 validation rows count as enough here
    train = cfpb_sample(per_class=20).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="auto", candidates=["head", "tfidf"],
                         choice_metric="accuracy", epochs=2, batch_size=8, max_length=64)
    result = finetune(train, cfg, seed=3, out_dir=tmp_path)
    assert (result.choice["validation_rows"], result.choice["folds"]) == (16, 1)
    assert result.candidates[0]["settings"]["best_epoch"] in (1, 2)  # early-stopped on the carve
    if "head" in result.choice["weights"]:  # trained again on all rows, keeping the first run's temperature
        card = json.loads((result.model_dir / "members" / "head" / MODEL_CARD).read_text())
        assert card["temperature"] == pytest.approx(result.candidates[0]["settings"]["temperature"])


def test_refit_continue_trains_the_carves_weights_for_refit_epochs_more_on_every_row(tiny_backbone, tmp_path,
                                                                                     monkeypatch):
    from tasks import auto

    monkeypatch.setattr(auto, "MIN_HELD_ROWS", 10)
    train = cfpb_sample(per_class=20).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="auto", candidates=["full"], refit="continue",
                         refit_epochs=1, epochs=3, batch_size=8, max_length=64, word_embeddings="train")
    result = finetune(train, cfg, seed=3, out_dir=tmp_path)
    first = result.candidates[0]["settings"]
    assert result.choice["weights"] == {"full": 1.0}
    # the member's record is the refit's: one epoch over all 80 rows, after the carve's early-stopped epochs
    assert len(result.losses) == 1 and result.best_epoch is None
    card = json.loads((result.model_dir / "members" / "full" / MODEL_CARD).read_text())
    assert card["temperature"] == pytest.approx(first["temperature"])
    assert not (tmp_path / "candidates").exists()  # the carve's kept weights go with the candidates


def test_a_run_started_from_kept_weights_continues_from_them(tiny_backbone, tmp_path):
    from tasks.training import WEIGHTS_FILE, run_fingerprint, train_strategy

    train = cfpb_sample(per_class=10).rename(columns={"issue": "label"})[["text", "label"]]
    texts = train["text"].tolist()
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="full", epochs=2, batch_size=8, max_length=64,
                         word_embeddings="train")
    first = train_strategy(train, cfg, 0, tmp_path / "first", keep_weights=True)
    kept = tmp_path / "first" / WEIGHTS_FILE
    # with learning rates too small to move a weight, a continued run predicts as the run it continues
    still = cfg.model_copy(update={"epochs": 1, "learning_rate": 1e-12, "head_learning_rate": 1e-12})
    continued = train_strategy(train, still, 1, tmp_path / "continued", start=kept)
    fresh = train_strategy(train, still, 1, tmp_path / "fresh")
    expected = Classifier(first.model_dir).predict_proba(texts)
    assert np.allclose(Classifier(continued.model_dir).predict_proba(texts), expected, atol=1e-5)
    assert not np.allclose(Classifier(fresh.model_dir).predict_proba(texts), expected, atol=1e-3)
    # a checkpoint of one never resumes the other
    assert run_fingerprint(train, still, 1, kept) != run_fingerprint(train, still, 1)


@pytest.mark.parametrize("raw, read", [(True, "retrain"), (False, "off"), ("continue", "continue")])
def test_refit_reads_true_and_false_as_retrain_and_off(raw, read):
    assert parse_params({"finetune": {"refit": raw}}).finetune.refit == read


def test_a_saved_portfolio_predicts_like_any_model(auto_model):
    result, train = auto_model
    texts = cfpb_sample(per_class=25).tail(12)["text"].tolist()
    model = load_classifier(result.model_dir)
    assert isinstance(model, Portfolio) and model.labels == sorted(train["label"].unique())
    probs = model.predict_proba(texts)
    assert probs.shape == (12, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    mixed = sum(w * model.member_probabilities(texts)[name] for name, w, _ in model.members)
    np.testing.assert_allclose(probs, apply_temperature(mixed, model.temperature), atol=1e-5)
    assert model.embed(texts).shape[0] == 12
    # a caller's own copy of the sentence vectors (suggest keeps the pool's) replaces a pass of the backbone
    assert model.reads_vectors == ("embedding" in result.choice["weights"])
    model.remember_vectors(texts, model.embed(texts))
    np.testing.assert_allclose(model.predict_proba(texts), probs, atol=1e-6)
    other = np.random.default_rng(0).normal(size=model.embed(texts).shape).astype(np.float32)
    model.remember_vectors(texts, other)
    assert np.allclose(model.predict_proba(texts), probs, atol=1e-4) != model.reads_vectors


def test_the_same_rows_are_embedded_once_in_a_row(auto_model, monkeypatch):
    """Evaluate predicts the training rows, then embeds them again for drift: the second costs nothing."""
    import tasks.portfolio

    result, _ = auto_model
    texts = cfpb_sample(per_class=25).tail(6)["text"].tolist()
    calls = []
    real = tasks.portfolio.sentence_vectors
    monkeypatch.setattr(tasks.portfolio, "sentence_vectors", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    model = load_classifier(result.model_dir)
    first = model.embed(texts)
    assert model.embed(list(texts)) is first and len(calls) == 1
    assert model.embed(texts[:3]).shape[0] == 3 and len(calls) == 2  # other rows: computed


def test_a_portfolio_serves_through_the_registered_pyfunc(auto_model, tmp_path):
    from tasks.register import _log_model

    result, _ = auto_model
    texts = cfpb_sample(per_class=25).tail(5)["text"].tolist()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_store(uri):
        # an experiment of its own: the default one would store its artifacts in ./mlruns of the checkout
        experiment = mlflow.create_experiment("tests", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = _log_model(result.model_dir, "auto-test")
        served = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": texts}))
    direct = load_classifier(result.model_dir).predict_proba(texts)
    assert list(served["prediction"]) == [load_classifier(result.model_dir).labels[i] for i in direct.argmax(1)]
    np.testing.assert_allclose(served["probability"], direct.max(axis=1), atol=1e-5)


def test_a_single_strategy_is_calibrated_on_its_validation_rows(tmp_path, tiny_backbone):
    train = cfpb_sample(per_class=10).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=2, batch_size=8, max_length=64,
                         validation_fraction=0.2)
    result = finetune(train, cfg, seed=0, out_dir=tmp_path)
    assert result.temperature != 1.0
    assert Classifier(result.model_dir).temperature == pytest.approx(result.temperature)
    plain = finetune(train, cfg.model_copy(update={"validation_fraction": 0.0}), seed=0, out_dir=tmp_path / "b")
    assert plain.temperature == 1.0


def test_the_registry_tags_and_the_run_summary_name_the_choice_and_each_candidate(auto_model):
    from dataclasses import asdict

    from flows.summary import model_line
    from tasks.register import candidate_metrics, candidate_scores, model_choice

    result, _ = auto_model
    training = asdict(result)
    tags = {"strategy": "auto", "model_choice": model_choice(training),
            "candidate_scores": candidate_scores(training), "temperature": f"{result.temperature:.4f}"}
    line = model_line(tags)
    for name, weight in result.choice["weights"].items():
        assert f"{name} {weight:.1f}" in tags["model_choice"]
    for candidate in result.candidates:
        assert f"{candidate['name']} {candidate['accuracy']:.3f} / {candidate['macro_f1']:.3f}" in line
    assert set(candidate_metrics(training)) == {f"candidate_{c['name']}_{m}" for c in result.candidates
                                                for m in ("accuracy", "macro_f1", "log_loss")}
    single = {"strategy": "head", "choice": {}, "candidates": []}
    assert model_choice(single) == "head" and candidate_scores(single) == ""


def test_the_equal_mixture_is_kept_only_when_it_beats_the_first_candidate_beyond_noise():
    from tasks.auto import choose_with_evidence

    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1], 100)
    guess = lambda: rng.dirichlet([1, 1], len(targets))  # noqa: E731  (no better than chance)
    sure = np.eye(2)[targets] * 0.8 + 0.1  # always right
    weights, chosen = choose_with_evidence({"tfidf": guess(), "full": sure}, targets, "macro_f1", 0, mixtures="equal")
    assert weights == {"tfidf": 0.5, "full": 0.5} and chosen["beyond_noise"]
    few = np.arange(0, 200, 25)  # 8 rows: no gain is beyond noise there, so the first candidate stays alone
    held = {"tfidf": guess()[few], "full": sure[few]}
    weights, chosen = choose_with_evidence(held, targets[few], "macro_f1", 0, mixtures="equal")
    assert weights == {"tfidf": 1.0} and not chosen["beyond_noise"]


def test_on_enough_validation_rows_the_first_candidate_must_beat_the_equal_mixture_to_be_kept_alone():
    from tasks.auto import MIN_HELD_ROWS, choose_equal

    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1], 100)
    guess = lambda: rng.dirichlet([1, 1], len(targets))  # noqa: E731  (no better than chance)
    sure = np.eye(2)[targets] * 0.8 + 0.1  # always right
    wrong = 1.0 - (np.eye(2)[targets] * 0.98 + 0.01)  # always wrong, and sure of it
    held = {"tfidf": guess(), "full": guess()}  # neither beats the other beyond noise
    weights, chosen = choose_equal(held, targets, "macro_f1", 0)
    assert weights == {"tfidf": 0.5, "full": 0.5} and chosen["burden"] == "tfidf" and not chosen["beyond_noise"]
    few = np.arange(0, 200, 25)  # 8 rows, fewer than MIN_HELD_ROWS: the mixture must prove itself, and cannot
    assert len(few) < MIN_HELD_ROWS <= len(targets)
    weights, chosen = choose_equal({name: probs[few] for name, probs in held.items()}, targets[few], "macro_f1", 0)
    assert weights == {"tfidf": 1.0} and chosen["burden"] == "mixture"
    weights, chosen = choose_equal({"tfidf": sure, "full": wrong}, targets, "macro_f1", 0)
    assert weights == {"tfidf": 1.0} and chosen["beyond_noise"] and chosen["macro_f1"] == 1.0
    weights, chosen = choose_equal({"tfidf": guess(), "full": sure}, targets, "macro_f1", 0)
    assert weights == {"tfidf": 0.5, "full": 0.5} and chosen["beyond_noise"]


def test_pruning_drops_the_candidates_the_first_one_beats_beyond_noise():
    from tasks.auto import prune

    targets = np.repeat([0, 1], 100)
    sure = np.eye(2)[targets] * 0.8 + 0.1
    wrong = 1.0 - sure
    first, close = sure.copy(), sure.copy()
    first[::20], close[10::20] = wrong[::20], wrong[10::20]  # each wrong on 10 other rows of 200: a tie
    kept = prune({"tfidf": first, "embedding": wrong, "full": close}, targets, "macro_f1", 0)
    assert list(kept) == ["tfidf", "full"]


def test_shrunk_weights_lie_between_the_grids_and_equal_ones_on_enough_rows():
    from tasks.auto import MIN_HELD_ROWS, choose, choose_shrunk, choose_with_evidence

    rng = np.random.default_rng(2)
    targets = np.repeat([0, 1], 100)
    held = {"tfidf": rng.dirichlet([1, 1], 200), "embedding": rng.dirichlet([1, 1], 200),
            "full": np.eye(2)[targets] * 0.8 + 0.1}
    grid, _ = choose(held, targets, "macro_f1")
    weights, _ = choose_shrunk(held, targets, "macro_f1", 0)
    assert weights == pytest.approx({name: 0.5 * grid.get(name, 0.0) + 0.5 / 3 for name in held})
    assert sum(weights.values()) == pytest.approx(1.0)
    share = MIN_HELD_ROWS / len(targets)  # auto's rule: the more rows, the less the weights are shrunk
    weights, chosen = choose_shrunk(held, targets, "macro_f1", 0, scaled=True)
    assert chosen["shrunk"] == pytest.approx(share) and share < 0.5
    assert weights == pytest.approx({name: (1 - share) * grid.get(name, 0.0) + share / 3 for name in held})
    few = np.arange(0, 200, 25)  # fewer than MIN_HELD_ROWS: auto's own rule
    assert len(few) < MIN_HELD_ROWS
    small = {name: probs[few] for name, probs in held.items()}
    weights, chosen = choose_shrunk(small, targets[few], "macro_f1", 0)
    assert not chosen.pop("shrunk")
    assert (weights, chosen) == choose_with_evidence(small, targets[few], "macro_f1", 0, mixtures="equal")


def test_on_fewer_than_few_rows_the_first_candidate_is_kept_alone_even_against_a_mixture_beyond_noise():
    from tasks.auto import FEW_ROWS, MIN_HELD_ROWS, choose_shrunk, choose_with_evidence

    targets = np.arange((FEW_ROWS + MIN_HELD_ROWS) // 2) % 2
    wrong_half = np.eye(2)[np.where(np.arange(len(targets)) % 4 < 2, targets, 1 - targets)] * 0.8 + 0.1
    held = {"tfidf": wrong_half, "full": np.eye(2)[targets] * 0.8 + 0.1}  # the mixture is always right
    few = slice(0, FEW_ROWS - 2)
    small = {name: probs[few] for name, probs in held.items()}
    tested, _ = choose_with_evidence(small, targets[few], "macro_f1", 0, mixtures="equal")
    assert tested == {"tfidf": 0.5, "full": 0.5}  # beyond noise by the bootstrap on these rows ...
    weights, chosen = choose_shrunk(small, targets[few], "macro_f1", 0, few_rows=FEW_ROWS)
    assert weights == {"tfidf": 1.0} and not chosen["beyond_noise"] and not chosen["shrunk"]  # ... yet too few rows
    assert FEW_ROWS <= len(targets) < MIN_HELD_ROWS  # from FEW_ROWS on, the test decides again
    assert choose_shrunk(held, targets, "macro_f1", 0, few_rows=FEW_ROWS)[0] == tested


def test_a_run_projects_its_time_from_the_tokens_of_its_first_batches():
    import torch

    from tasks import training

    clock = [0.0]
    lengths = torch.tensor([10, 200, 30, 500, 40, 60, 80, 100] * 10)  # 80 rows, 10 batches of 8
    rows = training.Rows([""] * 80, torch.zeros(80, dtype=torch.long), lengths=lengths)
    order = torch.arange(80)
    total = 7.0 + 4 * 0.01 * float(lengths.sum())  # 7 s spent, then 0.01 s per token for 4 epochs
    watch = training.Projection(total - 1, rows, order, batches=10, epochs=4, spent=7.0, clock=lambda: clock[0])
    assert watch.check_at == 1 + training.PROBE_BATCHES  # the warm-up batch is not timed
    with pytest.raises(training.OverTime) as caught:
        for index in order.split(8):
            clock[0] += 5.0 if watch.seen == 0 else 0.01 * float(lengths[index].sum())  # warm-up is slow
            watch(index)
    assert caught.value.projected == pytest.approx(total)
    assert watch.seen == watch.check_at  # raised at the check, early in the epoch
    within = training.Projection(total + 1, rows, order, batches=10, epochs=4, spent=7.0, clock=lambda: clock[0])
    for index in order.split(8):
        clock[0] += 0.01 * float(lengths[index].sum())
        within(index)  # the same pace fits a limit just above it


def test_a_fine_tuned_candidate_projected_past_the_time_budget_is_left_out(tiny_backbone, tmp_path, capsys):
    from dataclasses import asdict

    from flows.summary import model_line
    from tasks.register import candidate_metrics, candidate_scores, model_choice

    train = cfpb_sample(per_class=20).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="auto", candidates=["tfidf", "full"],
                         epochs=2, batch_size=8, max_length=64, time_budget=1e-6)  # minutes: nothing fits
    result = finetune(train, cfg, seed=0, out_dir=tmp_path / "short")
    left = result.candidates[1]
    assert left["name"] == "full" and left["left_out"] == "time_budget" and left["projected_seconds"] > 0
    assert result.choice["weights"] == {"tfidf": 1.0}
    assert sorted(p.name for p in (result.model_dir / "members").iterdir()) == ["tfidf"]
    assert "candidate full left out" in capsys.readouterr().out
    training = asdict(result)
    assert set(candidate_metrics(training)) == {f"candidate_tfidf_{m}" for m in ("accuracy", "macro_f1", "log_loss")}
    line = model_line({"strategy": "auto", "model_choice": model_choice(training),
                       "candidate_scores": candidate_scores(training)})
    assert "full left out by finetune.time_budget" in line

    roomy = finetune(train, cfg.model_copy(update={"time_budget": 600.0}), seed=0, out_dir=tmp_path / "roomy")
    assert [c["name"] for c in roomy.candidates] == ["tfidf", "full"]
    assert not any("left_out" in c for c in roomy.candidates)

    alone = cfg.model_copy(update={"candidates": ["full"]})
    with pytest.raises(ParamsError, match="finetune.time_budget"):
        finetune(train, alone, seed=0, out_dir=tmp_path / "alone")


def test_the_best_equally_weighed_subset_and_a_lower_confidence_keep_a_clearly_better_single_candidate():
    from tasks.auto import choose_subset, choose_with_evidence, equal_subsets

    assert [sorted(w) for w in equal_subsets(["a", "b", "c"])] == [
        ["a"], ["b"], ["c"], ["a", "b"], ["a", "c"], ["b", "c"], ["a", "b", "c"]]
    rng = np.random.default_rng(1)
    targets = np.repeat([0, 1], 30)
    right = np.eye(2)[targets] * 0.6 + 0.2
    # tfidf right on 40 of 60 rows, full on 46, a weak third on 30: full alone is the best subset
    tfidf, full = right.copy(), right.copy()
    for probs, wrong in ((tfidf, 20), (full, 14)):
        rows = rng.choice(60, wrong, replace=False)
        probs[rows] = probs[rows][:, ::-1]
    held = {"tfidf": tfidf, "full": full, "weak": rng.dirichlet([1, 1], 60)}
    weights, _ = choose_subset(held, targets, "accuracy")
    assert weights == {"full": 1.0}
    # whether its gain over the first candidate counts depends on the confidence asked for
    strict, _ = choose_with_evidence(held, targets, "accuracy", 0, mixtures="subsets", confidence=0.999)
    loose, _ = choose_with_evidence(held, targets, "accuracy", 0, mixtures="subsets", confidence=0.2)
    assert strict == {"tfidf": 1.0} and loose == {"full": 1.0}
