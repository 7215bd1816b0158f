"""Config: YAML + overrides, validation with one-line errors naming the key."""

from pathlib import Path

import pytest
import yaml

from inception.config import Config, all_keys, describe, load_config, parse_override
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


def test_seed_recipes_translate_the_seeds():
    c = load_config(CONFIGS / "googlenet_cifar10.yaml", {"data.data_dir": "x"})
    assert (c.train.batch_size, c.train.epochs, c.optim.momentum, c.optim.lr, c.optim.weight_decay) == (128, 125, 0.9, 0.1, 5e-4)
    assert (c.schedule.name, c.schedule.fractions, c.schedule.gamma) == ("multistep", [0.3, 0.6, 0.8], 0.1)
    g = load_config(CONFIGS / "googlenet_imagenet.yaml", {"data.data_dir": "x"})
    assert (g.train.batch_size, g.train.epochs, g.optim.lr, g.schedule.milestones, g.schedule.gamma) == (256, 300, 0.1, [70, 140, 210, 280], 0.3)
    assert g.optim.weight_decay == 1e-4 and g.optim.no_decay_bn_bias and g.train.label_smoothing == 0.1
    v4 = load_config(CONFIGS / "inception_v4_imagenet.yaml", {"data.data_dir": "x"})
    assert (v4.optim.name, v4.optim.alpha, v4.optim.eps, v4.schedule.name, v4.train.label_smoothing) == ("rmsprop", 0.9, 1.0, "cosine", 0.1)
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
    ({"data.dataset": "folder"}, "needs data.data_dir (--data-dir PATH)"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  momentun: 0.9\n")
    with pytest.raises(UserError, match=r"unknown config key 'optim.momentun' in .*bad.yaml; did you mean 'optim.momentum'"):
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
