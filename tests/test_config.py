"""Config loading: defaults, YAML + dotted overrides, coercion, and errors that name the key."""

from __future__ import annotations

import dataclasses

import pytest

from transrec.config import (
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    parse_overrides,
)
from transrec.errors import ConfigError


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- defaults and loading


def test_defaults_match_the_dataclasses():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.train.lr == 1e-3 and cfg.train.objective == "softmax"
    assert cfg.model.dilations == [1, 4]
    assert cfg.eval.ks == [5, 10, 20] and cfg.eval.exclude_history is True
    assert cfg.data.path is None and cfg.data.min_user_interactions == 3
    # every section is its own dataclass instance, never shared between configs
    assert load_config().model.dilations is not cfg.model.dilations


def test_yaml_file_then_dotted_overrides(tmp_path):
    path = write(tmp_path, """
name: exp1
data:
  source: folder
  path: /some/where
  max_len: 20
model:
  name: nextitnet
  dim: 32
  dilations: [1, 4, 8]
train:
  lr: 0.01
  epochs: 7
eval:
  exclude_history: true
""")
    cfg = load_config(path)
    assert cfg.name == "exp1"
    assert cfg.data.source == "folder" and cfg.data.path == "/some/where" and cfg.data.max_len == 20
    assert cfg.model.name == "nextitnet" and cfg.model.dim == 32 and cfg.model.dilations == [1, 4, 8]
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 7
    # keys not in the file keep their defaults
    assert cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.model.kernel_size == ModelConfig().kernel_size

    cfg = load_config(path, ["train.lr=1e-4", "model.dilations=[1,2]", "eval.exclude_history=false",
                             "data.path=null"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.dilations == [1, 2]
    assert cfg.eval.exclude_history is False
    assert cfg.data.path is None
    # overrides only replace what they name; the rest of the file survives
    assert cfg.train.epochs == 7 and cfg.model.dim == 32 and cfg.data.source == "folder"
    assert cfg.name == "exp1"


def test_overrides_without_a_file_and_later_override_wins():
    cfg = load_config(None, ["train.epochs=3", "train.epochs=5", "name=quick", "eval.ks=[1,3]"])
    assert cfg.train.epochs == 5 and cfg.name == "quick" and cfg.eval.ks == [1, 3]


def test_parse_overrides_builds_a_nested_tree():
    tree = parse_overrides(["train.lr=1e-4", "model.dilations=[1,2]", "data.path=null", "name=a=b"])
    assert tree == {"train": {"lr": "1e-4"}, "model": {"dilations": [1, 2]}, "data": {"path": None},
                    "name": "a=b"}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["train.lr"])


# ---------------------------------------------------------------- coercion


def test_values_are_coerced_to_field_types(tmp_path):
    path = write(tmp_path, """
data:
  max_len: "3"
  k_core: 4.0
train:
  lr: "1e-3"
  weight_decay: 1
  progress: "false"
  epochs: "12"
model:
  dilations: "1,2,4"
  dropout: "0.5"
eval:
  exclude_history: "no"
  ks: 10
""")
    cfg = load_config(path)
    assert cfg.data.max_len == 3 and type(cfg.data.max_len) is int
    assert cfg.data.k_core == 4 and type(cfg.data.k_core) is int
    assert cfg.train.lr == pytest.approx(1e-3) and type(cfg.train.lr) is float
    assert cfg.train.weight_decay == 1.0 and type(cfg.train.weight_decay) is float
    assert cfg.train.progress is False
    assert cfg.train.epochs == 12 and type(cfg.train.epochs) is int
    assert cfg.model.dilations == [1, 2, 4] and all(type(d) is int for d in cfg.model.dilations)
    assert cfg.model.dropout == 0.5 and type(cfg.model.dropout) is float
    assert cfg.eval.exclude_history is False
    assert cfg.eval.ks == [10]


def test_coercion_through_overrides_and_dicts():
    cfg = load_config(None, ["data.max_len=3", "train.lr=1e-3", "train.progress=false", "eval.exclude_history=true",
                             "data.synthetic_seed=7"])
    assert cfg.data.max_len == 3 and type(cfg.data.max_len) is int
    assert cfg.train.lr == pytest.approx(1e-3) and type(cfg.train.lr) is float
    assert cfg.train.progress is False and cfg.eval.exclude_history is True
    cfg = config_from_dict({"data": {"max_len": "3"}, "train": {"lr": "1e-3", "progress": "false"},
                            "model": {"dim": "16"}})
    assert (cfg.data.max_len, cfg.train.lr, cfg.train.progress, cfg.model.dim) == (3, 1e-3, False, 16)
    # strings stay strings even when YAML reads a number
    cfg = load_config(None, ["name=123"])
    assert cfg.name == "123"


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("tree, bad, nearest", [
    ({"trian": {"lr": 0.1}}, "trian", "train"),
    ({"train": {"lrr": 0.1}}, "train.lrr", "train.lr"),
    ({"model": {"dilation": [1]}}, "model.dilation", "model.dilations"),
    ({"eval": {"exclude_histroy": False}}, "eval.exclude_histroy", "eval.exclude_history"),
])
def test_unknown_key_in_dict_names_it_and_suggests(tree, bad, nearest):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree)
    msg = str(err.value)
    assert f"'{bad}'" in msg
    assert f"did you mean '{nearest}'" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.1\n  epochz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "'train.epochz'" in str(err.value) and "did you mean 'train.epochs'" in str(err.value)
    path = write(tmp_path, "modle:\n  dim: 8\n", "top.yaml")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "'modle'" in str(err.value) and "did you mean 'model'" in str(err.value)


def test_unknown_key_via_override():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lrr=1e-4"])
    assert "'train.lrr'" in str(err.value) and "did you mean 'train.lr'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["dat.path=/x"])
    assert "'dat'" in str(err.value) and "did you mean 'data'" in str(err.value)


def test_unknown_key_without_close_match_still_names_it():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.zzzzzzzz=1"])
    assert "'train.zzzzzzzz'" in str(err.value)
    assert "did you mean" not in str(err.value)


# ---------------------------------------------------------------- wrong types


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),
    ("data.max_len=2.5", "data.max_len"),
    ("train.lr=fast", "train.lr"),
    ("eval.exclude_history=maybe", "eval.exclude_history"),
    ("train.objective=[a,b]", "train.objective"),
    ("model.name={x: 1}", "model.name"),
    ("data.path=[a]", "data.path"),
    ("model.dilations=[1,x]", "model.dilations"),
    ("train.epochs=true", "train.epochs"),
    ("train.lr=true", "train.lr"),
])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value)


def test_wrong_type_in_yaml_and_section_not_a_mapping(tmp_path):
    path = write(tmp_path, "model:\n  name: [sasrec, gru4rec]\n")
    with pytest.raises(ConfigError, match="model.name"):
        load_config(path)
    path = write(tmp_path, "train: 5\n", "sec.yaml")
    with pytest.raises(ConfigError, match="train"):
        load_config(path)


# ---------------------------------------------------------------- files


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "train:\n  lr: [1, 2\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)


def test_top_level_not_a_mapping(tmp_path):
    path = write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_empty_file_is_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


# ---------------------------------------------------------------- round trip


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=1e-4", "model.dilations=[1,2,8]", "eval.exclude_history=false",
                             "data.path=/tmp/x y", "data.domain=books", "name=run 1", "train.max_minutes=2.5",
                             "eval.ks=[1,50]", "model.name=nextitnet", "train.progress=false"])
    path = write(tmp_path, cfg.to_yaml(), "round.yaml")
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    # defaults round-trip too (None values included)
    path = write(tmp_path, Config().to_yaml(), "defaults.yaml")
    assert load_config(path) == Config()


def test_to_dict_covers_every_field():
    d = Config().to_dict()
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        assert set(d[section]) == {f.name for f in dataclasses.fields(cls)}


def test_study_id_reference_uses_the_converged_sasrec_recipe():
    """The transfer studies' "ID SASRec on the target" is the recipe of configs/ml100k_sasrec.yaml (the one
    compared with RecBole at convergence), so the two cannot drift apart."""
    from pathlib import Path

    from transrec.config import load_config
    from transrec.training.study import id_config

    root = Path(__file__).resolve().parents[1]
    recipe = load_config(str(root / "configs" / "ml100k_sasrec.yaml"), [])
    reference = id_config(load_config(str(root / "configs" / "ml100k_era_target.yaml"), []))
    assert reference.model.item_encoder == "id" and reference.model.name == "sasrec"
    for section, keys in (("model", ("dropout", "num_layers", "num_heads", "dim")),
                          ("data", ("train_stride",)), ("train", ("objective", "patience", "lr", "batch_size"))):
        for key in keys:
            assert getattr(getattr(reference, section), key) == getattr(getattr(recipe, section), key), (section, key)


def test_image_items_config_is_the_benchmarked_id_image_recipe(monkeypatch):
    """configs/image_items.yaml is the id+image row of benchmarks/image_in_domain.py (the one
    image_data_share.py measures against ID SASRec), so the shipped recipe cannot drift from it."""
    import argparse
    import sys
    from pathlib import Path

    from transrec.config import load_config

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    sys.modules.pop("image_in_domain", None)
    import image_in_domain

    args = argparse.Namespace(image_size=128, epochs=150, patience=10, min_epochs=30, train_fraction=1.0)
    benchmarked = image_in_domain.config(image_in_domain.TRAINED["id+image"], args, 42).to_dict()
    shipped = load_config(str(root / "configs" / "image_items.yaml"), []).to_dict()
    for section in ("data", "model", "train"):
        for key in set(benchmarked[section]) - {"progress"}:
            assert shipped[section][key] == benchmarked[section][key], (section, key)


def test_id_content_config_is_the_measured_recipe():
    """configs/ml100k_id_content_minilm.yaml is the in-domain id+content run that benchmarks/README.md reports
    (the transfer config with the ID recipe's overrides), so the shipped file cannot drift from the measured one."""
    from pathlib import Path

    from transrec.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    measured = load_config(str(root / "ml100k_transrec_minilm.yaml"), [
        "model.id_embedding=true", "train.transfer_calibration=0", "data.train_stride=10", "model.dropout=0.5",
        "train.patience=20", "model.score=dot", "model.content_residual=false",
        "model.lexical_numbers=true"]).to_dict()  # zero-shot only; the in-domain run has no lexical term
    shipped = load_config(str(root / "ml100k_id_content_minilm.yaml"), []).to_dict()
    for section in ("data", "model", "train", "eval"):
        assert shipped[section] == measured[section], section
