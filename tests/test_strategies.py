"""The strategy table is the one place that says what each fine-tuning strategy needs: the config's names, the
docs' table and the benchmark settings all come from it or agree with it."""

from __future__ import annotations

from typing import get_args

import pytest
import yaml

from tasks.config import FinetuneParams, Strategy as StrategyName
from tasks.errors import ParamsError
from tasks.strategies import STRATEGIES, markdown_table, strategy
from tests.conftest import REPO


def project_finetune() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())["finetune"]


def test_the_config_accepts_exactly_the_strategies_in_the_table():
    assert list(get_args(StrategyName)) == list(STRATEGIES)


def test_every_entry_is_filed_under_its_own_name():
    assert all(name == entry.name for name, entry in STRATEGIES.items())


def test_the_docs_table_is_the_strategy_table_written_out():
    doc = (REPO / "docs" / "strategies.md").read_text()
    expected = markdown_table(FinetuneParams.model_fields["strategy"].default)
    assert expected in doc, ("docs/strategies.md's strategy table differs from tasks/strategies.py; replace it "
                             "with tasks.strategies.markdown_table(default):\n" + expected)


def test_the_default_strategy_is_benchmarked_with_what_params_yaml_says():
    finetune = project_finetune()
    settings = STRATEGIES[finetune["strategy"]].benchmarked
    assert {key: finetune[key] for key in settings} == settings


def test_benchmarked_settings_are_valid_finetune_params():
    for name, entry in STRATEGIES.items():
        FinetuneParams(strategy=name, **entry.benchmarked)


def test_an_unknown_strategy_names_the_known_ones():
    with pytest.raises(ParamsError, match="use one of head, freeze, lora, ia3, gradual_unfreeze, full"):
        strategy("prefix_tuning")


def test_the_benchmark_runs_each_strategy_with_its_entry():
    from benchmarks.quality import STRATEGIES as BENCHMARKED, STRATEGY_SETTINGS

    assert BENCHMARKED == list(STRATEGIES)
    assert STRATEGY_SETTINGS == {name: entry.benchmarked for name, entry in STRATEGIES.items()}
