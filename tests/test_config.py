"""Params: defaults, the repo's params.yaml, one-line errors for each kind of mistake, --set, digest, paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tasks.config import Params, Paths, load_params, parse_params
from tasks.errors import ParamsError
from tests.conftest import REPO


def write(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def params_error(raw: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_load_with_the_documented_values():
    params = Params()
    assert params.base.seed == 42 and params.base.workdir == "outputs"
    assert params.finetune.strategy == "auto" and params.finetune.tuned_strategy == "full"
    assert params.finetune.epochs == 8
    assert params.finetune.pair_loss_weight == 10.0 and params.finetune.lora_target_modules == ["query", "value"]
    assert params.split.holdout_fraction == 0.2
    assert params.validate.labels == [] and params.validate.min_examples_per_class == 8
    assert params.register.alias == "challenger"


def test_an_empty_params_file_gives_the_defaults(tmp_path):
    assert load_params(write(tmp_path, "")) == Params()


def test_the_repos_params_yaml_loads_with_its_values():
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params.as_dict() == {**Params().as_dict(), **raw}
    assert params.ingest.timestamp_column == "created_at"
    assert len(params.validate.labels) == 7
    assert params.finetune.strategy == "auto" and params.finetune.learning_rate == 0.0001


def test_unknown_section_names_it_and_lists_the_sections():
    message = params_error({"trainer": {"epochs": 3}})
    assert "'trainer'" in message
    assert "base, ingest, validate, split, finetune, adapt, self_training, evaluate, register, trials" in message


def test_unknown_key_in_a_section_names_it_and_lists_the_allowed_keys():
    message = params_error({"finetune": {"epoch": 3}})
    assert "unknown key 'finetune.epoch'" in message
    assert "backbone, strategy, epochs, batch_size, gradient_accumulation, learning_rate" in message


def test_unknown_key_in_an_aliased_section_lists_that_sections_keys():
    message = params_error({"validate": {"min_examples": 3}})
    assert "'validate.min_examples'" in message
    assert "allowed keys here: labels, min_examples_per_class, min_class_share" in message


def test_wrong_type_names_key_value_and_expected_type():
    message = params_error({"finetune": {"epochs": "many"}})
    assert "finetune.epochs = 'many'" in message
    assert "valid integer" in message


def test_a_string_where_a_list_belongs_is_reported():
    message = params_error({"validate": {"labels": "billing"}})
    assert "validate.labels = 'billing'" in message and "valid list" in message


@pytest.mark.parametrize(("section", "key", "value", "allowed"), [
    ("finetune", "epochs", 0, "greater than or equal to 1"),
    ("split", "holdout_fraction", 1.5, "less than 1"),
    ("split", "holdout_fraction", 0, "greater than 0"),
    ("finetune", "max_length", 4, "greater than or equal to 8"),
    ("finetune", "lora_dropout", 1.0, "less than 1"),
])
def test_out_of_range_numbers_name_key_value_and_bound(section, key, value, allowed):
    message = params_error({section: {key: value}})
    assert f"{section}.{key} = {value!r} is not allowed" in message
    assert allowed in message


def test_an_empty_target_module_list_is_refused():
    message = params_error({"finetune": {"lora_target_modules": []}})
    assert "finetune.lora_target_modules = []" in message and "at least 1 item" in message


def test_bad_strategy_names_the_allowed_value():
    message = params_error({"finetune": {"strategy": "nope"}})
    assert "finetune.strategy = 'nope'" in message
    assert "'head', 'freeze', 'lora', 'ia3', 'gradual_unfreeze', 'full' or 'auto'" in message


def test_bad_device_names_every_allowed_value():
    message = params_error({"finetune": {"device": "tpu"}})
    assert "finetune.device = 'tpu'" in message
    assert "'auto', 'cpu' or 'cuda'" in message


def test_missing_params_file_says_so(tmp_path):
    with pytest.raises(ParamsError, match=r"nope\.yaml: params file not found; pass --params FILE"):
        load_params(tmp_path / "nope.yaml")


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path):
    path = write(tmp_path, "finetune:\n  epochs: [1,\n")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML (") and message.endswith("fix the syntax")
    assert "\n" not in message


def test_yaml_list_instead_of_mapping_is_refused(tmp_path):
    path = write(tmp_path, "- finetune\n- split\n")
    with pytest.raises(ParamsError, match=r"expected sections such as 'finetune:', found a list"):
        load_params(path)


def test_error_from_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "finetune:\n  epochs: 0\n")
    with pytest.raises(ParamsError, match=rf"^{path}: finetune\.epochs = 0 is not allowed"):
        load_params(path)


@pytest.mark.parametrize("kind", ["latin-1 bytes", "a folder"])
def test_an_unreadable_params_file_is_a_params_error(tmp_path, kind):
    if kind == "a folder":
        path = tmp_path / "params.yaml"
        path.mkdir()
    else:
        path = tmp_path / "params.yaml"
        path.write_bytes("finetune:\n  backbone: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(path)


def test_set_override_applies(tmp_path):
    path = write(tmp_path, "finetune:\n  epochs: 10\n")
    params = load_params(path, ["finetune.epochs=3", "split.holdout_fraction=0.3"])
    assert params.finetune.epochs == 3
    assert params.split.holdout_fraction == 0.3


def test_set_override_adds_a_section_missing_from_the_file(tmp_path):
    params = load_params(write(tmp_path, "base:\n  seed: 1\n"), ["finetune.lora_target_modules=[query]"])
    assert params.finetune.lora_target_modules == ["query"]
    assert params.base.seed == 1


def test_set_override_null_clears_an_optional_value():
    params = load_params(REPO / "params.yaml", ["ingest.timestamp_column=null"])
    assert params.ingest.timestamp_column is None


@pytest.mark.parametrize("delimiter", [",", ";", "|", "\t"])
def test_set_override_takes_a_delimiter_yaml_cannot_read_as_written(delimiter):
    params = load_params(REPO / "params.yaml", [f"ingest.delimiter={delimiter}"])
    assert params.ingest.delimiter == delimiter


def test_set_override_with_a_bad_value_is_checked_like_the_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ParamsError, match=r"finetune\.epochs = 0 is not allowed"):
        load_params(path, ["finetune.epochs=0"])


@pytest.mark.parametrize("item", ["finetune.epochs", "epochs=3", "finetune..r=3", ".epochs=3"])
def test_set_without_section_key_and_value_is_refused(tmp_path, item):
    with pytest.raises(ParamsError) as caught:
        load_params(write(tmp_path, ""), [item])
    assert str(caught.value) == f"--set {item!r}: expected SECTION.KEY=VALUE, for example finetune.epochs=3"


def test_set_reaches_a_nested_key_and_refuses_to_go_inside_a_value(tmp_path):
    params = load_params(write(tmp_path, "finetune:\n  privacy:\n"), ["finetune.privacy.epsilon=8",
                                                                       "finetune.strategy=lora"])
    assert params.finetune.privacy.epsilon == 8 and params.finetune.privacy.max_grad_norm == 1.0
    with pytest.raises(ParamsError, match=r"unknown key 'finetune\.lora'; allowed keys here: backbone, "):
        load_params(write(tmp_path, ""), ["finetune.lora.r=3"])
    with pytest.raises(ParamsError) as caught:
        load_params(write(tmp_path, "finetune:\n  epochs: 8\n"), ["finetune.epochs.x=3"])
    assert str(caught.value) == ("--set 'finetune.epochs.x=3': finetune.epochs holds a value, not keys; set it "
                                 "whole, for example finetune.epochs=VALUE")


def test_set_with_unknown_section_lists_the_sections(tmp_path):
    with pytest.raises(ParamsError) as caught:
        load_params(write(tmp_path, ""), ["nosuch.key=1"])
    assert str(caught.value) == ("--set 'nosuch.key=1': unknown section 'nosuch'; "
                                 "sections are: base, ingest, validate, split, finetune, adapt, self_training, evaluate, register, trials, "
                                 "suggest")


def test_set_with_unknown_key_lists_the_allowed_keys(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'split\.nosuch'; allowed keys here: holdout_fraction$"):
        load_params(write(tmp_path, ""), ["split.nosuch=1"])


def test_digest_is_stable_for_equal_params():
    first = parse_params({"finetune": {"epochs": 3}})
    second = parse_params({"finetune": {"epochs": 3}})
    assert first.digest() == second.digest()
    assert len(first.digest()) == 12
    assert Params().digest() == parse_params({"finetune": {"epochs": 8}}).digest()  # an explicit default


def test_digest_changes_when_a_value_changes():
    assert parse_params({"finetune": {"epochs": 3}}).digest() != parse_params({"finetune": {"epochs": 4}}).digest()
    assert Params().digest() != parse_params({"base": {"seed": 43}}).digest()


def test_paths_derive_stage_folders_from_workdir(tmp_path):
    paths = Paths.of(tmp_path, parse_params({"base": {"workdir": "runs/one"}}))
    root = tmp_path.resolve()
    assert paths.root == root
    assert paths.workdir == root / "runs" / "one"
    assert paths.stage("ingest") == root / "runs" / "one" / "ingest"
    assert paths.mlflow_db == root / "runs" / "one" / "mlflow" / "mlflow.db"
    assert paths.mlflow_artifacts == root / "runs" / "one" / "mlflow" / "artifacts"


def test_paths_resolve_a_relative_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = Paths.of(Path("."), Params())
    assert paths.stage("split") == tmp_path.resolve() / "outputs" / "split"


def test_a_segment_column_that_ingest_does_not_keep_is_refused_naming_both_keys():
    message = params_error({"evaluate": {"segment_column": "region"}, "ingest": {"metadata_columns": ["channel"]}})
    assert message == ("params: evaluate.segment_column 'region' is not kept by ingest (metadata_columns: "
                       "channel); add it to ingest.metadata_columns or pick one of those")
    kept = parse_params({"evaluate": {"segment_column": "channel"}, "ingest": {"metadata_columns": ["channel"]}})
    assert kept.evaluate.segment_column == "channel"


def test_the_approval_mode_and_primary_metric_list_the_allowed_values():
    assert "'reviewer' or 'auto'" in params_error({"register": {"approval": "maybe"}})
    assert "'accuracy' or 'macro_f1'" in params_error({"register": {"primary_metric": "f1"}})


# --- values that used to fail only once a stage ran: refused at load, in one line --------------------------

@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("delimiter", "ab", "one character other than a quote or a line break"),
    ("delimiter", "", "one character"),
    ("delimiter", '"', "one character other than a quote"),
    ("encoding", "klingon", "not a text encoding Python knows"),
    ("encoding", "rot13", "not a text encoding Python knows"),
])
def test_a_delimiter_or_encoding_that_cannot_read_a_file_is_refused_at_load(key, value, allowed):
    message = params_error({"ingest": {key: value}})
    assert f"ingest.{key} = {value!r} is not allowed: " in message and allowed in message
    assert "'auto'" in message


@pytest.mark.parametrize(("key", "value"), [("delimiter", "\t"), ("delimiter", ";"), ("encoding", "latin-1"),
                                            ("encoding", "UTF-16"), ("encoding", "auto")])
def test_one_character_delimiters_and_known_encodings_load(key, value):
    assert getattr(parse_params({"ingest": {key: value}}).ingest, key) == value


@pytest.mark.parametrize(("section", "key"), [("finetune", "batch_size"), ("finetune", "learning_rate"),
                                              ("base", "seed"), ("split", "holdout_fraction")])
def test_a_boolean_is_not_a_number(section, key):
    message = params_error({section: {key: True}})
    assert f"{section}.{key} = True is not allowed: a number is expected, not true or false" in message


def test_a_boolean_is_not_a_number_in_an_optional_nested_threshold():
    message = params_error({"evaluate": {"drift_warn": {"text": False}}})
    assert "evaluate.drift_warn.text = False is not allowed: a number is expected" in message


def test_set_with_a_boolean_for_a_number_fails_at_load(tmp_path):
    with pytest.raises(ParamsError, match=r"finetune\.batch_size = True is not allowed"):
        load_params(write(tmp_path, ""), ["finetune.batch_size=true"])


def test_a_backbone_folder_that_does_not_exist_is_refused_at_load(tmp_path):
    missing = tmp_path / "no-such-model"
    message = params_error({"finetune": {"backbone": str(missing)}})
    assert f"finetune.backbone = {str(missing)!r} is not allowed: no such folder" in message
    assert "'minilm'" in message


def test_a_backbone_folder_without_config_json_is_refused_at_load(tmp_path):
    message = params_error({"finetune": {"backbone": str(tmp_path)}})
    assert "config.json is missing" in message and "save_pretrained" in message


def test_a_hub_id_offline_says_how_to_allow_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = params_error({"finetune": {"backbone": "someone/some-model"}})
    assert "finetune.backbone = 'someone/some-model' is not allowed: no such folder" in message
    assert "HF_HUB_OFFLINE=0" in message


def test_a_hub_id_is_accepted_when_the_hub_is_allowed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert parse_params({"finetune": {"backbone": "someone/some-model"}}).finetune.backbone == "someone/some-model"


def test_freeze_layers_beyond_the_backbone_are_refused_at_load(tiny_backbone):
    message = params_error({"finetune": {"backbone": str(tiny_backbone), "strategy": "freeze", "freeze_layers": 3}})
    assert "finetune.freeze_layers = 3 is not allowed: " in message and "has 2 layers; use 0 to 2" in message
    default = params_error({"finetune": {"backbone": str(tiny_backbone), "strategy": "freeze"}})
    assert "finetune.freeze_layers = 4 is not allowed" in default  # the default, checked against this backbone
    minilm = params_error({"finetune": {"strategy": "freeze", "freeze_layers": 7}})
    assert "'minilm' has 6 layers; use 0 to 6" in minilm


def test_freeze_layers_only_matter_to_the_freeze_strategy(tiny_backbone):
    params = parse_params({"finetune": {"backbone": str(tiny_backbone), "strategy": "full", "freeze_layers": 9}})
    assert params.finetune.freeze_layers == 9
    assert parse_params({"finetune": {"backbone": str(tiny_backbone), "strategy": "freeze",
                                      "freeze_layers": 2}}).finetune.freeze_layers == 2


def test_a_trial_whose_freeze_depth_exceeds_the_backbone_fails_at_load(tiny_backbone):
    message = params_error({"finetune": {"backbone": str(tiny_backbone), "freeze_layers": 3},
                            "trials": {"grid": {"finetune.strategy": ["full", "freeze"]}}})
    assert "finetune.freeze_layers = 3 is not allowed" in message and "use 0 to 2" in message


def test_loading_params_imports_no_torch(tmp_path):
    import subprocess
    import sys

    script = ("import sys; from tasks.config import load_params; "
              f"load_params({str(write(tmp_path, 'finetune: {strategy: freeze}'))!r}); "
              "print('torch' in sys.modules)")
    checked = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert checked.stdout.strip() == "False", checked.stderr


@pytest.mark.parametrize(("item", "named"), [
    ("ingest.delimiter=ab", "ingest.delimiter = 'ab' is not allowed: use 'auto' or one character"),
    ("ingest.encoding=klingon", "ingest.encoding = 'klingon' is not allowed: not a text encoding"),
    ("finetune.batch_size=true", "finetune.batch_size = True is not allowed: a number is expected"),
    ("finetune.backbone=./models/absent", "finetune.backbone = './models/absent' is not allowed: no such folder"),
])
def test_nichetune_run_with_a_bad_value_exits_before_any_work_with_one_line(tmp_path, monkeypatch, capsys, item,
                                                                            named):
    from flows.cli import main

    (tmp_path / ".dvc").mkdir()  # a project root, with no data: any stage that ran would fail differently
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["run", "--set", item])
    err = capsys.readouterr().err
    assert stop.value.code != 0 and err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "outputs").exists()


def test_a_hub_id_in_the_local_cache_loads_offline_with_its_depth_checked(tmp_path, tiny_backbone):
    import shutil
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--someone--tiny-bert" / "snapshots" / "abc123"
    shutil.copytree(tiny_backbone, snapshot)
    (tmp_path / "hub" / "models--someone--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-bert" / "refs" / "main").write_text("abc123")
    script = """
from tasks.config import parse_params
from tasks.errors import ParamsError
print(parse_params({"finetune": {"backbone": "someone/tiny-bert", "strategy": "freeze", "freeze_layers": 2}})
      .finetune.backbone)
try:
    parse_params({"finetune": {"backbone": "someone/tiny-bert", "strategy": "freeze", "freeze_layers": 3}})
except ParamsError as err:
    print(err)
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    checked = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    lines = checked.stdout.splitlines()
    assert lines[0] == "someone/tiny-bert", checked.stderr
    assert "finetune.freeze_layers = 3 is not allowed" in lines[1] and "has 2 layers" in lines[1]
