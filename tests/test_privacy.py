"""Differentially private training (finetune.privacy) with Opacus on the tiny random BERT: per-row gradients, the
accountant, the budget's limits, what params load refuses, the gate's max_epsilon, and the tags a version carries."""

from __future__ import annotations

import math

import pytest
import torch
from mlflow import MlflowClient
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from tasks import privacy
from tasks.config import FinetuneParams, PrivacyParams, RegisterParams, parse_params
from tasks.errors import ParamsError
from tasks.promote import Comparison, check_gate
from tasks.training import build_model, train_strategy
from tests.conftest import cfpb_sample, make_project, project_params

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


@pytest.fixture(scope="module")
def train():
    return cfpb_sample(per_class=12).rename(columns={"issue": "label"})[["text", "label"]]


def private(tiny_backbone, strategy: str, **values) -> FinetuneParams:
    settings = dict(backbone=str(tiny_backbone), strategy=strategy, epochs=2, batch_size=8, max_length=32,
                    learning_rate=5e-3, privacy=PrivacyParams(epsilon=3.0))
    return FinetuneParams(**{**settings, **values})


@pytest.mark.parametrize("strategy", ["lora", "ia3"])
def test_each_rows_gradient_from_opacus_is_its_gradient_alone(tiny_backbone, strategy):
    """The per-row gradients Opacus clips (IA3's from tasks.privacy's own grad sampler) equal autograd's on
    each row run by itself."""
    from transformers import AutoTokenizer

    cfg = private(tiny_backbone, strategy)
    torch.manual_seed(0)
    model = build_model(cfg, ["a", "b", "c"]).train()  # Opacus hooks only a module in training mode
    for module in model.modules():  # ... so the backbone's own dropout is turned off instead
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for name, param in model.named_parameters():  # IA3 starts at ones and LoRA's B at zeros: move off the start
        if param.requires_grad:
            param.data += 0.1 * torch.randn_like(param)
    hooks = privacy._adapter_hooks()(model, loss_reduction="mean")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    texts = ["my loan was never paid back", "why was I charged twice this month", "call me"]
    targets = torch.tensor([0, 2, 1])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    torch.nn.functional.cross_entropy(model.classify(model.embed(**batch)), targets).backward()
    trained = {name: param for name, param in model.named_parameters() if param.requires_grad}
    assert any("ia3_l" in name or "lora_" in name for name in trained)
    per_row = {name: param.grad_sample.clone() for name, param in trained.items()}
    hooks.remove_hooks()
    for i, text in enumerate(texts):
        model.zero_grad(set_to_none=True)
        alone = tokenizer([text], return_tensors="pt")
        torch.nn.functional.cross_entropy(model.classify(model.embed(**alone)), targets[i:i + 1]).backward()
        for name, param in trained.items():
            torch.testing.assert_close(per_row[name][i], param.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("strategy", privacy.PRIVATE_STRATEGIES)
def test_private_training_spends_what_opacus_accountant_says_and_no_more(tiny_backbone, train, tmp_path, strategy):
    result = train_strategy(train, private(tiny_backbone, strategy), seed=3, out_dir=tmp_path)
    spent = result.privacy
    rows, batch_size, epochs = len(train), 8, 2
    steps = epochs * math.ceil(rows / batch_size)
    sample_rate = batch_size / rows
    noise = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=sample_rate, steps=steps,
                                 accountant="rdp", epsilon_tolerance=0.01)
    accountant = RDPAccountant()
    for _ in range(steps):  # Opacus's accountant, stepped as its optimizer hook steps it
        accountant.step(noise_multiplier=noise, sample_rate=sample_rate)
    assert spent["steps_taken"] == spent["steps"] == steps
    assert spent["noise_multiplier"] == pytest.approx(noise)
    assert spent["sample_rate"] == pytest.approx(sample_rate)
    assert spent["spent_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert 2.9 < spent["spent_epsilon"] <= 3.0
    assert (result.model_dir / "nichetune.json").is_file()


def test_the_prv_accountant_is_opacus_prv(tiny_backbone, train, tmp_path):
    from opacus.accountants import PRVAccountant

    cfg = private(tiny_backbone, "head", privacy=PrivacyParams(epsilon=8.0, accountant="prv"))
    spent = train_strategy(train, cfg, seed=3, out_dir=tmp_path).privacy
    accountant = PRVAccountant()
    accountant.history = [(spent["noise_multiplier"], spent["sample_rate"], spent["steps"])]
    assert spent["accountant"] == "prv"
    assert spent["spent_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-6)
    assert spent["spent_epsilon"] <= 8.0


def test_a_noise_multiplier_that_would_exceed_the_budget_is_refused_before_training():
    too_little = PrivacyParams(epsilon=1.0, noise_multiplier=0.3)
    with pytest.raises(ParamsError, match=r"would spend epsilon \d+\.\d\d, over the budget 1.*noise_multiplier"):
        privacy.plan(too_little, rows=200, batch_size=16, epochs=5)
    enough = privacy.plan(PrivacyParams(epsilon=1.0, noise_multiplier=5.0), rows=200, batch_size=16, epochs=5)
    assert enough.noise_multiplier == 5.0 and enough.steps == 5 * 13


def test_training_refuses_a_step_past_the_budget(tiny_backbone):
    cfg = private(tiny_backbone, "head")
    model = build_model(cfg, ["a", "b"]).train()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    budget = privacy.plan(cfg.privacy, rows=16, batch_size=8, epochs=1)
    run = privacy.PrivateTraining(model, optimizer, budget, batch_size=8)
    vectors, targets = torch.randn(8, model.bert.config.hidden_size), torch.tensor([0, 1] * 4)
    for _ in range(budget.steps - 1):
        run.check()
        torch.nn.functional.cross_entropy(model.classify(vectors), targets).backward()
        run.optimizer.step()
        run.optimizer.zero_grad()
    before = model.head.weight.detach().clone()
    run.check()
    run.empty_step()  # an empty Poisson batch is a step too: noise only, and counted
    run.optimizer.step()
    assert not torch.equal(model.head.weight, before)
    assert run.steps_taken == budget.steps and run.spent() <= cfg.privacy.epsilon
    with pytest.raises(privacy.BudgetSpent, match="would exceed it"):
        run.check()
    run.close()
    assert not hasattr(model.head.weight, "grad_sample")


def test_a_resumed_private_run_draws_the_same_batches(tiny_backbone):
    cfg = private(tiny_backbone, "head")
    model = build_model(cfg, ["a", "b"]).train()
    budget = privacy.plan(cfg.privacy, rows=50, batch_size=8, epochs=2)
    run = privacy.PrivateTraining(model, torch.optim.SGD(model.head.parameters(), lr=0.1), budget, batch_size=8)
    first, again = run.batches(50, seed=1, epoch=1), run.batches(50, seed=1, epoch=1)
    assert len(first) == budget.steps_per_epoch == 7
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert 20 < sum(len(batch) for batch in first) < 90  # Poisson: about 50 rows per epoch, in batches of 8 on average


def test_a_private_run_resumed_from_its_checkpoint_spends_and_learns_as_one_straight_run(tiny_backbone, train,
                                                                                           tmp_path, monkeypatch):
    from tasks import training

    cfg = private(tiny_backbone, "lora", epochs=3)
    real_say, lines = training.say, []

    def stop_in_epoch_two(line: str) -> None:  # after epoch 1's checkpoint, as a killed run would
        lines.append(line)
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt
        real_say(line)

    monkeypatch.setattr(training, "say", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_strategy(train, cfg, seed=4, out_dir=tmp_path / "killed", work_dir=tmp_path / "work")
    monkeypatch.setattr(training, "say", real_say)
    resumed = train_strategy(train, cfg, seed=4, out_dir=tmp_path / "resumed", work_dir=tmp_path / "work")
    straight = train_strategy(train, cfg, seed=4, out_dir=tmp_path / "straight")
    assert resumed.resumed_from_epoch == 1 and straight.resumed_from_epoch is None
    assert resumed.losses == straight.losses
    assert resumed.privacy == straight.privacy  # the accountant came back with the checkpoint: no step counted twice
    assert resumed.privacy["steps_taken"] == resumed.privacy["steps"]


@pytest.mark.parametrize("setting, refusal", [
    ({"finetune": {"strategy": "full"}}, "finetune.strategy full cannot be trained privately"),
    ({"finetune": {"strategy": "auto"}}, "finetune.strategy auto cannot be trained privately"),
    ({"finetune": {"strategy": "lora", "validation_fraction": 0.2}}, "validation rows would choose the epoch"),
    ({"finetune": {"strategy": "lora", "augment": "eda"}}, "finetune.augment makes copies"),
    ({"finetune": {"strategy": "head", "class_balance": "weights"}}, "label counts"),
    ({"finetune": {"strategy": "head", "gradient_accumulation": 2}}, "raise batch_size instead"),
    ({"finetune": {"strategy": "head"}, "self_training": {"rounds": 1}}, "spending the budget twice"),
    ({"finetune": {"strategy": "head"}, "adapt": {"objective": "mlm"}}, "unlabeled texts outside the budget"),
])
def test_settings_that_would_train_outside_the_budget_are_refused_at_params_load(setting, refusal):
    raw = {section: dict(values) for section, values in setting.items()}
    raw["finetune"]["privacy"] = {"epsilon": 8}
    with pytest.raises(ParamsError, match="finetune.privacy.epsilon is 8, but") as err:
        parse_params(raw)
    assert refusal in str(err.value) and "\n" not in str(err.value)
    raw["finetune"]["privacy"] = {"epsilon": None}
    parse_params(raw)  # without privacy every one of them is allowed


def test_trials_are_refused_with_privacy_before_any_training():
    from flows.trials import expand

    raw = {"finetune": {"strategy": "head", "privacy": {"epsilon": 8}},
           "trials": {"grid": {"finetune.strategy": ["head", "lora"]}}}
    with pytest.raises(ParamsError, match="nichetune trials: finetune.privacy is on"):
        expand(parse_params(raw))


def test_the_gate_with_max_epsilon_refuses_models_not_private_enough():
    comparison = Comparison("macro_f1", 40, "2", {"accuracy": 0.8, "macro_f1": 0.8})
    strict = RegisterParams(max_epsilon=3)
    assert check_gate(strict, comparison, "passed", "ok", "2.99").passed
    over = check_gate(strict, comparison, "passed", "ok", "7.95")
    assert over.reasons == ["trained privately with epsilon 7.95, above register.max_epsilon 3"]
    assert check_gate(strict, comparison, "passed", "ok", None).reasons == [
        "not trained privately, and register.max_epsilon is 3"]
    assert check_gate(RegisterParams(), comparison, "passed", "ok", None).passed


@pytest.mark.slow
def test_a_private_run_registers_its_budget_and_the_gate_holds_to_max_epsilon(tmp_path, tiny_backbone,
                                                                             prefect_harness):
    from flows.cli import privacy_lines
    from flows.pipeline import train_pipeline
    from flows.summary import privacy_line

    params = project_params(str(tiny_backbone), register={"model_name": "private", "experiment": "private",
                                                          "approval": "auto", "max_epsilon": 8})
    params["finetune"].update(strategy="lora", epochs=2, privacy={"epsilon": 8, "max_grad_norm": 0.5})
    result = train_pipeline(root=str(make_project(tmp_path / "project", cfpb_sample(), params)))
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    tags = client.get_model_version("private", result["version"]).tags
    assert tags["private"] == "true" and tags["privacy_target_epsilon"] == "8"
    assert 7.5 < float(tags["privacy_epsilon"]) <= 8
    assert tags["privacy_max_grad_norm"] == "0.5" and tags["privacy_delta"] == "1e-05"
    assert float(tags["privacy_noise_multiplier"]) > 0 and 0 < float(tags["privacy_sample_rate"]) < 1
    assert int(tags["privacy_steps"]) > 0 and tags["privacy_accountant"] == "rdp"
    assert "max_epsilon" not in tags.get("gate", "")  # private within 8: not a reason to refuse
    assert privacy_lines(result["tags"]) == [  # the last lines `nichetune run` prints
        f"  trained privately: epsilon {float(tags['privacy_epsilon']):.2f} of 8 spent (delta 1e-05, Opacus rdp "
        "accountant)"]
    line = privacy_line(tags)  # the Prefect run summary's
    assert f"epsilon {float(tags['privacy_epsilon']):.2f} spent of 8, delta 1e-05" in line and "0.5" in line
