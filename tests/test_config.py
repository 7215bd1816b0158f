"""Config: YAML + overrides, validation with one-line errors naming the key."""

from pathlib import Path

import pytest
import yaml

from inception.config import APPLIES_WHEN, Config, all_keys, describe, load_config, lookup, parse_override, to_yaml
from inception.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "inception" / "configs"


def test_defaults_and_overrides():
    cfg = load_config(None, {"optim.lr": 0.05, "train.epochs": 3, "model.options": {"aux_logits": True}})
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 3 and cfg.model.options == {"aux_logits": True}
    assert cfg.data.dataset == "digits"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(path):
    overrides = {"data.data_dir": "/somewhere"} if "demo" not in path.name else {}
    cfg = load_config(path, overrides)
    assert isinstance(cfg, Config)
    # every key in the file is a real key
    data = yaml.safe_load(path.read_text())
    keys = {f"{s}.{k}" for s, v in data.items() for k in v}
    assert keys <= set(all_keys())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_packaged_recipes_hold_no_data_path(path):
    """A recipe ships inside the package: its data comes from --data-dir, never from a path
    that exists only beside this repository; without one, the message says what to pass."""
    data = yaml.safe_load(path.read_text())
    assert "data_dir" not in data.get("data", {}), f"{path.name} names a data path"
    if data.get("data", {}).get("dataset", "digits") not in ("digits", "synthetic"):
        with pytest.raises(UserError, match=r"needs its data: pass --data-dir PATH \("):
            load_config(path)


def test_seed_recipes_translate_the_seeds():
    c = load_config(CONFIGS / "googlenet_cifar10.yaml", {"data.data_dir": "x"})
    assert (c.train.batch_size, c.train.epochs, c.optim.momentum, c.optim.lr,
            c.optim.weight_decay) == (128, 125, 0.9, 0.1, 5e-4)
    assert (c.schedule.name, c.schedule.fractions, c.schedule.gamma) == ("multistep", [0.3, 0.6, 0.8], 0.1)
    g = load_config(CONFIGS / "googlenet_imagenet.yaml", {"data.data_dir": "x"})
    assert (g.train.batch_size, g.train.epochs, g.optim.lr, g.schedule.milestones,
            g.schedule.gamma) == (256, 300, 0.1, [70, 140, 210, 280], 0.3)
    assert g.optim.weight_decay == 1e-4 and g.optim.no_decay_bn_bias and g.train.label_smoothing == 0.1
    v4 = load_config(CONFIGS / "inception_v4_imagenet.yaml", {"data.data_dir": "x"})
    assert (v4.optim.name, v4.optim.alpha, v4.optim.eps, v4.schedule.name,
            v4.train.label_smoothing) == ("rmsprop", 0.9, 1.0, "cosine", 0.1)
    assert v4.schedule.warmup_epochs > 0


@pytest.mark.parametrize("overrides,message", [
    ({"optim.lrr": 0.1}, "unknown config key 'optim.lrr' (command line); did you mean 'optim.lr'?"),
    ({"train.lr": 0.1}, "did you mean 'optim.lr'?"),
    ({"optim.lr": "fast"}, "config key 'optim.lr' must be a number, got 'fast'"),
    ({"optim.lr": -1}, "config key 'optim.lr' = -1.0 is out of range; it must be > 0"),
    ({"train.epochs": 2.5}, "config key 'train.epochs' must be an integer"),
    ({"data.dataset": "cifar"}, "config key 'data.dataset' = 'cifar' is not valid; did you mean 'cifar10'?"),
    ({"optim.nesterov": "yes"}, "must be true or false"),
    ({"schedule.name": "step"}, "needs schedule.milestones"),
    ({"data.dataset": "folder"}, "needs its data: pass --data-dir PATH (a folder of train/<class>/"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  momentun: 0.9\n")
    with pytest.raises(UserError,
                       match=r"unknown config key 'optim.momentun' in .*bad.yaml; did you mean 'optim.momentum'"):
        load_config(bad)
    bad.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(UserError, match="unknown config key 'optimizer'"):
        load_config(bad)
    bad.write_text("optim: [\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_parse_override_and_describe():
    assert parse_override("optim.lr=0.05") == ("optim.lr", 0.05)
    assert parse_override("data.crop_scale=[0.35, 1]") == ("data.crop_scale", [0.35, 1])
    assert parse_override("model.options={aux_logits: true}") == ("model.options", {"aux_logits": True})
    with pytest.raises(UserError, match="section.key=value"):
        parse_override("optim.lr")
    text = describe()
    assert all(k.split(".")[1] + ":" in text for k in all_keys())


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, {"optim.lr": 0.02, "schedule.fractions": [0.5], "schedule.name": "multistep"})
    cfg.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("text,value", [("1e-4", 1e-4), ("1E-4", 1e-4), ("5e3", 5e3), (".5", 0.5), ("1_000", 1000.0),
                                        ("2.5e-1", 0.25), ("+1e-2", 0.01), ("inf", float("inf")), ("3", 3.0)])
def test_float_spellings_on_the_command_line(text, value):
    key, parsed = parse_override(f"optim.weight_decay={text}")
    assert load_config(None, {key: parsed}).optim.weight_decay == value
    # negative numbers and list entries too (optim.betas has no lower bound)
    betas = load_config(None, {"optim.betas": parse_override("optim.betas=[-3e-2, 1E-3]")[1]}).optim.betas
    assert betas == [-0.03, 0.001]


def test_float_spellings_in_a_recipe_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  options: {aux_logits: true, dropout: 2e-1}\n"
                      "optim:\n  weight_decay: 1e-4\n  lr: 5E-2\n  eps: 1.0e-3\n"
                      "schedule:\n  eta_min: 1e-6\n  warmup_epochs: .5\n")
    cfg = load_config(recipe)
    assert (cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.eps) == (1e-4, 0.05, 1e-3)
    assert (cfg.schedule.eta_min, cfg.schedule.warmup_epochs) == (1e-6, 0.5)
    assert cfg.model.options == {"aux_logits": True, "dropout": 0.2}   # free-form options: a float, not '2e-1'
    recipe.write_text("train:\n  epochs: 1e1\n")
    with pytest.raises(UserError, match=r"config key 'train.epochs' must be an integer, got '1e1'"):
        load_config(recipe)


@pytest.mark.parametrize("overrides,message", [
    ({"train.epochs": "3.5"}, "config key 'train.epochs' must be an integer, got '3.5'"),
    ({"train.batch_size": "1e2"}, "config key 'train.batch_size' must be an integer, got '1e2'"),
    ({"optim.weight_decay": "1e-4x"}, "config key 'optim.weight_decay' must be a number, got '1e-4x'; write e.g."),
    ({"optim.lr": "nan"}, "config key 'optim.lr' must be a number, got nan"),
    ({"optim.weight_decay": "-1e-4"}, "'optim.weight_decay' = -0.0001 is out of range; it must be >= 0"),
    ({"data.crop_pct": 0}, "config key 'data.crop_pct' = 0.0 is out of range; it must be > 0"),
    ({"data.crop_pct": "1.5"}, "config key 'data.crop_pct' = 1.5 is out of range; it must be <= 1"),
    ({"optim.lr.max": 1}, "config key 'optim.lr' (command line) is not a mapping, so 'optim.lr.max' does not exist; "
                          "set it whole: optim.lr=VALUE"),
    ({"model.option.aux_logits": True}, "unknown config key 'model.option' (command line); did you mean "
                                        "'model.options'?"),
    ({"model.options.aux_logits": True, "model.options": []}, "config key 'model.options' must be a mapping"),
])
def test_strict_ints_and_dotted_path_errors(overrides, message):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_dotted_path_merges_into_a_mapping(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  options: {aux_logits: true, dropout: 0.3}\n")
    cfg = load_config(recipe, dict([parse_override("model.options.aux_logits=false"),
                                    parse_override("model.options.dropout_aux=5e-1"),
                                    parse_override("model.options.extra.depth=2")]))
    assert cfg.model.options == {"aux_logits": False, "dropout": 0.3, "dropout_aux": 0.5, "extra": {"depth": 2}}
    assert load_config(recipe).model.options == {"aux_logits": True, "dropout": 0.3}   # the recipe is not changed
    assert load_config(None, {"model.options.stem": "cifar"}).model.options == {"stem": "cifar"}


def test_crop_pct_key():
    assert load_config(None).data.crop_pct is None
    assert load_config(None, {"data.crop_pct": 0.9}).data.crop_pct == 0.9
    assert load_config(None, {"data.crop_pct": 1}).data.crop_pct == 1.0
    assert "crop_pct: None  # eval center crop" in describe()


def test_applicability_table_names_real_keys_and_values():
    keys = set(all_keys())
    for key, (selector, values) in APPLIES_WHEN.items():
        assert key in keys and (selector in keys or selector.startswith("model.options."))
        for value in values:   # every listed value is one the selector accepts
            cfg = load_config(None, {selector: value, "data.data_dir": "x", "schedule.milestones": [1],
                                     "schedule.fractions": [0.5]})
            assert lookup(cfg, selector) == value


@pytest.mark.parametrize("overrides,marked,not_marked", [
    ({}, ["milestones: []  # not used with schedule.name=cosine", "alpha: 0.9  # not used with optim.name=sgd",
          "eps: 1.0e-08  # not used with optim.name=sgd", "betas: [0.9, 0.999]  # not used with optim.name=sgd",
          "aux_weight: 0.3  # not used unless model.options.aux_logits=true",
          "data_dir: null  # not used with data.dataset=digits",
          "loss_scale: null  # not used with train.precision=auto"],
     ["momentum: 0.9", "eta_min: 0.0", "nesterov: false"]),
    ({"optim.name": "adamw", "schedule.name": "step", "schedule.milestones": [3, 6], "train.precision": "fp16",
      "model.options": {"aux_logits": True, "dropout": "1e-1"}},
     ["momentum: 0.9  # not used with optim.name=adamw", "eta_min: 0.0  # not used with schedule.name=step",
      "fractions: []  # not used with schedule.name=step"],
     ["eps: 1.0e-08", "betas: [0.9, 0.999]", "milestones: [3.0, 6.0]", "gamma: 0.1", "aux_weight: 0.3",
      "loss_scale: null", "options: {aux_logits: true, dropout: 0.1}"]),
    ({"optim.name": "rmsprop", "schedule.name": "multistep", "schedule.fractions": [0.5],
      "data.dataset": "folder", "data.data_dir": "/data/x: y # z", "train.time_limit": "1h30m"},
     ["betas: [0.9, 0.999]  # not used with optim.name=rmsprop", "nesterov: false  # not used with optim.name=rmsprop",
      "train_list: null  # not used with data.dataset=folder"],
     ["alpha: 0.9", "fractions: [0.5]", "data_dir: '/data/x: y # z'"]),
    ({"model.options": {"aux_logits": False}},
     ["aux_weight: 0.3  # not used with model.options.aux_logits=false"], []),
])
def test_printed_config_marks_unused_keys_and_round_trips(tmp_path, overrides, marked, not_marked):
    cfg = load_config(None, overrides)
    text = to_yaml(cfg)
    lines = [line.strip() for line in text.splitlines()]
    for line in marked:
        assert line in lines
    for line in not_marked:   # keys that apply: printed without a comment
        assert line in lines
    (tmp_path / "printed.yaml").write_text(text)
    assert load_config(tmp_path / "printed.yaml").to_dict() == cfg.to_dict()
    assert yaml.safe_load(text) == cfg.to_dict()


def test_short_budget_schedule_and_ema_keys():
    one = to_yaml(load_config(None, {"schedule.name": "onecycle"})).splitlines()
    assert "  warmup_epochs: 0.0  # not used with schedule.name=onecycle" in one
    assert "  flat_fraction: 0.75  # not used with schedule.name=onecycle" in one
    assert "  eta_min: 0.0  # not used with schedule.name=onecycle" in one
    assert "  pct_start: 0.3" in one and "  div_factor: 25.0" in one and "  final_div_factor: 10000.0" in one
    flat = to_yaml(load_config(None, {"schedule.name": "flat_cosine"})).splitlines()
    assert "  flat_fraction: 0.75" in flat and "  eta_min: 0.0" in flat and "  warmup_epochs: 0.0" in flat
    assert "  pct_start: 0.3  # not used with schedule.name=flat_cosine" in flat
    with pytest.raises(UserError, match="'onecycle' warms up by itself"):
        load_config(None, {"schedule.name": "onecycle", "schedule.warmup_epochs": 1})
    with pytest.raises(UserError, match="schedule.flat_fraction' = 1.0 is out of range"):
        load_config(None, {"schedule.name": "flat_cosine", "schedule.flat_fraction": 1})
    text = describe()
    for key in ("ema_decay: None  # keep an exponential moving average", "ema_warmup: False  # EMA decay warmup",
                "flat_fraction: 0.75  # flat_cosine:", "pct_start: 0.3  # onecycle:"):
        assert key in text, key
    cfg = load_config(None, {"train.ema_decay": 0.999, "train.ema_warmup": True})
    assert (cfg.train.ema_decay, cfg.train.ema_warmup) == (0.999, True)
