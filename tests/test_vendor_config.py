"""Vendor config files (MindSpore model zoo, PaddleClas) read as recipes: detection, every
translated value, nothing dropped silently, `convert-config` round trips, errors, the CLI."""

import logging
import math
from pathlib import Path

import pytest
import yaml

from inception.cli import main
from inception.config import Config, apply
from inception.engine.optim import lr_factor_fn
from inception.errors import UserError
from inception.vendor_config import MODELS, _leaves, convert_file, detect, load_config, read_documents, translate

HERE = Path(__file__).resolve().parent / "vendor_configs"
MS_GOOGLENET = HERE / "mindspore_googlenet_cifar10_config.yaml"
MS_V4 = HERE / "mindspore_inceptionv4_default_config_gpu.yaml"
PD_GOOGLENET = HERE / "paddleclas_GoogLeNet.yaml"
PD_V4 = HERE / "paddleclas_InceptionV4.yaml"
FIXTURES = [MS_GOOGLENET, MS_V4, PD_GOOGLENET, PD_V4]

EXPECTED = {
    MS_GOOGLENET: {
        "model": {"name": "googlenet", "options": {"variant": "mindspore"}, "num_classes": 10},
        "data": {"dataset": "cifar10", "data_dir": "/home/DataSet/cifar10", "image_size": 224, "crop_padding": 28,
                 "augment": "cifar"},
        "optim": {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.1},
        "schedule": {"name": "multistep", "fractions": [0.3, 0.6, 0.8], "gamma": 0.1},
        "train": {"epochs": 125, "batch_size": 128, "keep_checkpoint_max": 10},
    },
    MS_V4: {
        "model": {"name": "inception_v4", "options": {"variant": "mindspore"}, "num_classes": 1000},
        "data": {"dataset": "folder", "data_dir": "/data/imagenet", "image_size": 299, "workers": 8},
        "optim": {"name": "rmsprop", "momentum": 0.9, "weight_decay": 4e-5, "alpha": 0.9, "eps": 1.0,
                  "no_decay_bn_bias": True, "lr": 0.4},
        "schedule": {"warmup_start": pytest.approx(1e-4), "name": "cosine", "eta_min": 4e-6, "warmup_epochs": 1.0},
        "train": {"epochs": 250, "batch_size": 128, "label_smoothing": 0.1, "precision": "fp32",
                  "keep_checkpoint_max": 10},
    },
    PD_GOOGLENET: {
        "model": {"name": "googlenet_v1", "num_classes": 1000, "options": {"aux_logits": True}, "aux_weight": 0.3},
        "data": {"dataset": "list", "data_dir": "./dataset/ILSVRC2012/", "train_list":
                 "./dataset/ILSVRC2012/train_list.txt", "image_size": 224, "augment": "imagenet", "hflip": True,
                 "workers": 4, "val_list": "./dataset/ILSVRC2012/val_list.txt", "crop_pct": 0.875},
        "optim": {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_epochs": 5.0},
        "train": {"epochs": 200, "log_interval": 10, "eval_interval": 1, "tensorboard": False, "batch_size": 64},
    },
    PD_V4: {
        "model": {"name": "inception_v4", "options": {"variant": "paddleclas"}, "num_classes": 1000},
        "data": {"dataset": "list", "data_dir": "./dataset/ILSVRC2012/", "train_list":
                 "./dataset/ILSVRC2012/train_list.txt", "image_size": 299, "augment": "imagenet", "hflip": True,
                 "mixup_alpha": 0.2, "workers": 4, "val_list": "./dataset/ILSVRC2012/val_list.txt",
                 "crop_pct": 0.934375},
        "optim": {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "lr": 0.045},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 200, "log_interval": 10, "eval_interval": 1, "tensorboard": False, "label_smoothing": 0.1,
                  "batch_size": 64},
    },
}


def _write(tmp_path, data, name="vendor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _tree(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("\n---")[0])


def test_detect():
    assert [detect(_tree(p)) for p in FIXTURES] == ["mindspore", "mindspore", "paddleclas", "paddleclas"]
    assert detect({"model": {"name": "googlenet"}, "train": {"epochs": 3}}) == "inception"
    assert detect({}) == "inception"
    assert detect({"foo": 1, "bar": 2}) is None and detect([1, 2]) is None
    assert detect({"lr_init": 0.1, "epoch_size": 10, "momentum": 0.9}) == "mindspore"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_every_value_translated(path):
    t = convert_file(path)
    assert t.recipe == EXPECTED[path]
    assert t.recipe["model"]["name"] == next(iter(v[0] for v in MODELS[t.source].values()
                                                   if v[0] == t.recipe["model"]["name"]))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_nothing_dropped_silently(path):
    t = convert_file(path)
    translated = {vkey for vkey, _, _, _ in t.rows}
    skipped = [key for key, _, _ in t.untranslated]
    assert not translated & set(skipped) and len(skipped) == len(set(skipped))   # each key in one list, once
    listed = translated | set(skipped)
    for leaf, _ in _leaves(_tree(path)):
        ancestors = {leaf[:i] for i, c in enumerate(leaf) if c in ".["}
        assert leaf in listed or ancestors & listed, leaf
    assert all(why for _, _, why in t.untranslated)
    assert not [k for k, _, why in t.untranslated if "knows" in why]   # every key of the real files is understood


def test_reasons_for_keys_without_equivalent():
    why = {k: reason for k, _, reason in convert_file(MS_V4).untranslated}
    assert "device" in why["device_target"] and "ModelArts" in why["enable_modelarts"]
    assert "--nproc" in why["is_distributed"] and "fp16" in why["loss_scale"]
    assert why["(YAML documents 2-3)"].startswith("MindSpore's help texts")
    why = {k: reason for k, _, reason in convert_file(PD_GOOGLENET).untranslated}
    assert "mean/std" in why["DataLoader.Train.dataset.transform_ops[3].NormalizeImage"]
    assert "top-1" in why["Metric"] and "inception infer" in why["Infer"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_convert_config_round_trip(path, tmp_path):
    out = tmp_path / "recipe.yaml"
    assert main(["convert-config", str(path), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(f"# Translated by `inception convert-config` from {path}")
    assert "# Not translated:" in text
    assert load_config(out) == load_config(path)
    assert yaml.safe_load(text) == convert_file(path).recipe


def test_train_config_reads_a_vendor_file_and_overrides_win(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="inception")
    cfg = load_config(MS_V4, {"optim.lr": 0.05, "model.options": {}})
    assert cfg.optim.lr == 0.05 and cfg.model.options == {} and cfg.train.epochs == 250
    assert isinstance(cfg, Config) and cfg.optim.name == "rmsprop"
    logged = [r.getMessage() for r in caplog.records if "MindSpore model-zoo config" in r.getMessage()]
    assert len(logged) == 1    # the whole table in one record
    assert "lr_max = 0.4" in logged[0] and "-> optim.lr = 0.4" in logged[0]
    assert "not translated:" in logged[0] and "device_target = GPU: ours picks the device" in logged[0]


def test_cli_prints_and_trains_from_vendor_files(capsys, tmp_path):
    assert main(["convert-config", str(PD_V4)]) == 0
    out = capsys.readouterr().out
    assert "name: inception_v4  # Arch.name" in out and "mixup_alpha: 0.2" in out
    assert main(["train", "--config", str(MS_V4), "--set", "model.options={}", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.4 and printed["schedule"]["eta_min"] == 4e-6
    assert main(["convert-config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_lr_curves_match_the_vendor_formulas():
    # MindSpore inceptionv4 train.py: linear from lr_init to lr_max over the warmup steps (value at the end of
    # each step), then cosine from lr_max to lr_end over the remaining steps.
    cfg = load_config(MS_V4, {"model.options": {}})
    spe, epochs = 10, 5
    f = lr_factor_fn(cfg.schedule, lr=cfg.optim.lr, steps_per_epoch=spe, epochs=epochs)
    lr_init, lr_end, lr_max, warm, total = 4e-5, 4e-6, 0.4, spe, spe * epochs
    for i in range(total):
        if i < warm:
            vendor = lr_init + (lr_max - lr_init) / warm * (i + 1)
            assert vendor - (lr_max - lr_init) / warm - 1e-9 <= lr_max * f(i) <= vendor + 1e-9   # one step behind
        else:
            vendor = (lr_max - lr_end) * 0.5 * (1 + math.cos(math.pi * (i - warm) / (total - warm))) + lr_end
            assert lr_max * f(i) == pytest.approx(vendor)
    # MindSpore googlenet CIFAR-10: lr x0.1 at 30%, 60%, 80% of the steps.
    cfg = load_config(MS_GOOGLENET)
    f = lr_factor_fn(cfg.schedule, lr=cfg.optim.lr, steps_per_epoch=spe, epochs=10)
    assert [f(i) for i in (0, 29, 30, 59, 60, 79, 80, 99)] == pytest.approx([1, 1, .1, .1, .01, .01, .001, .001])
    # PaddleClas Cosine with warmup_epoch 5: LinearWarmup from 0, then cosine over the epochs after it.
    cfg = load_config(PD_GOOGLENET)
    f = lr_factor_fn(cfg.schedule, lr=cfg.optim.lr, steps_per_epoch=spe, epochs=200)
    warm, total = 5 * spe, 200 * spe
    for i in (0, 10, 49, 50, 51, 1000, total - 1):
        vendor = i / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / (total - warm)))
        assert f(i) == pytest.approx(vendor)


def test_mindspore_schedules_precision_and_paths(tmp_path):
    base = {"net_name": "GoogleNet", "dataset_name": "imagenet", "lr_init": 0.1, "epoch_size": 300,
            "train_data_path": "/d/ImageNet/train/", "val_data_path": "/d/ImageNet/val/", "batch_size": 256}
    t = translate({**base, "lr_scheduler": "exponential", "lr_epochs": [70, 140, 210, 280], "lr_gamma": 0.3,
                   "T_max": 150, "eta_min": 0.0, "warmup_epochs": 0, "amp_level": "O3", "loss_scale": 1024,
                   "is_dynamic_loss_scale": 0, "use_label_smooth": True, "label_smooth_factor": 0.1}, "x.yaml")
    r = t.recipe
    assert (r["schedule"]["name"], r["schedule"]["milestones"], r["schedule"]["gamma"]) == (
        "step", [70.0, 140.0, 210.0, 280.0], 0.3)
    assert (r["data"]["data_dir"], r["data"]["train_split"], r["data"]["val_split"]) == ("/d/ImageNet", "train", "val")
    assert (r["train"]["precision"], r["train"]["loss_scale"], r["train"]["label_smoothing"]) == ("fp16", 1024, 0.1)
    assert r["optim"]["no_decay_bn_bias"] is True and r["model"]["name"] == "googlenet"
    assert any("BatchNorm in fp16" in text for _, text in t.notes)
    why = {k: reason for k, _, reason in t.untranslated}
    assert "not used with lr_scheduler exponential" in why["T_max"]
    t = translate({**base, "lr_scheduler": "cosine_annealing", "T_max": 150, "eta_min": 0.001, "amp_level": "O2",
                   "loss_scale": 1024, "is_dynamic_loss_scale": 1, "use_label_smooth": False,
                   "label_smooth_factor": 0.1}, "x.yaml")
    r = t.recipe
    assert (r["schedule"]["name"], r["schedule"]["eta_min"], r["train"]["loss_scale"]) == ("cosine", 0.001, 1024)
    assert r["train"]["dynamic_loss_scale"] is True
    assert r["train"]["label_smoothing"] == 0.0
    assert any(k == "T_max" and why.startswith("approximated:") for k, _, why in t.untranslated)
    assert any(k == "lr_scheduler" and text.startswith("approximated:") for k, text in t.notes)


def test_vendor_weights_in_configs_become_model_pretrained():
    """A MindSpore pre_trained .ckpt and PaddleClas's Global.pretrained_model (Paddle adds the
    .pdparams suffix itself) are read by --pretrained (models/vendor.py)."""
    ms = translate({"net_name": "GoogleNet", "lr_init": 0.1, "pre_trained": "/ckpt/googlenet_ascend.ckpt", "resume": 0},
                   "x.yaml")
    assert ms.recipe["model"]["pretrained"] == "/ckpt/googlenet_ascend.ckpt"
    pd = yaml.safe_load(PD_GOOGLENET.read_text())
    pd["Global"]["pretrained_model"] = "./pretrained/GoogLeNet_pretrained"
    r = translate(pd, "GoogLeNet.yaml").recipe
    assert r["model"]["pretrained"] == "./pretrained/GoogLeNet_pretrained.pdparams"
    assert translate(yaml.safe_load(PD_GOOGLENET.read_text()), "x.yaml").recipe["model"].get("pretrained") is None


def test_paddle_piecewise_step_amp_and_ema():
    tree = _tree(PD_V4)
    tree["Optimizer"]["lr"] = {"name": "Piecewise", "decay_epochs": [30, 60, 90], "values": [0.1, 0.01, 0.001, 1e-5],
                               "warmup_epoch": 2, "warmup_start_lr": 0.01}
    tree["AMP"] = {"scale_loss": 128.0, "use_dynamic_loss_scaling": False, "level": "O2"}
    tree["EMA"] = {"decay": 0.9999}
    t = translate(tree, "InceptionV4.yaml")
    r = t.recipe
    assert (r["optim"]["lr"], r["schedule"]["name"], r["schedule"]["milestones"]) == (0.1, "step", [30, 60, 90])
    assert r["schedule"]["gamma"] == pytest.approx(0.1) and r["schedule"]["warmup_start"] == pytest.approx(0.1)
    assert (r["train"]["precision"], r["train"]["loss_scale"], r["train"]["ema_decay"]) == ("fp16", 128.0, 0.9999)
    notes = " ".join(text for _, text in t.notes)
    assert "one factor (0.1)" in notes and "O2 keeps fp16 weights" in notes
    tree["Optimizer"]["lr"] = {"name": "Step", "learning_rate": 0.1, "step_size": 30, "gamma": 0.1}
    tree["AMP"] = {"scale_loss": 128.0, "use_dynamic_loss_scaling": True, "level": "O1"}
    r = translate(tree, "InceptionV4.yaml").recipe
    assert (r["schedule"]["name"], r["schedule"]["milestones"], r["train"]["loss_scale"]) == (
        "step", [30, 60, 90, 120, 150, 180], 128.0)
    assert r["train"]["dynamic_loss_scale"] is True                # dynamic, from 128 as Paddle's


@pytest.mark.parametrize("change,message", [
    (lambda d: d["Arch"].update(name="ResNet50"), "Arch.name = ResNet50 has no equivalent here; known: GoogLeNet"),
    (lambda d: d["Optimizer"].update(name="Lamb"), "Optimizer.name = Lamb is not one of Momentum"),
    (lambda d: d["Optimizer"]["lr"].update(name="Cyclic"), "Optimizer.lr.name = Cyclic is not Cosine"),
    (lambda d: d["Optimizer"]["lr"].update(learning_rate="fast"), "Optimizer.lr.learning_rate = fast cannot be "
                                                                   "used: config key 'optim.lr' must be a number"),
    (lambda d: d["Global"].update(epochs=-3), "Global.epochs = -3 cannot be used"),
])
def test_bad_vendor_values_are_one_line_errors(change, message, tmp_path):
    tree = _tree(PD_GOOGLENET)
    change(tree)
    path = _write(tmp_path, tree)
    with pytest.raises(UserError) as e:
        load_config(path)
    assert message in str(e.value) and f"PaddleClas config '{path}'" in str(e.value) and "\n" not in str(e.value)


def test_mindspore_errors_and_the_model_hint(tmp_path, capsys):
    tree = _tree(MS_V4)
    tree.pop("file_name")
    path = _write(tmp_path, {**tree, "lr_max": "fast"}, "default_config.yaml")
    with pytest.raises(UserError, match=r"'.*default_config.yaml': lr_max = fast is not a number"):
        load_config(path, {"model.name": "inception_v4"})
    path = _write(tmp_path, tree, "default_config.yaml")
    with pytest.raises(UserError, match="does not say which model it trains; add net_name: googlenet"):
        load_config(path)
    assert load_config(path, {"model.name": "inception_v4"}).model.name == "inception_v4"
    assert main(["convert-config", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["convert-config", str(path), "--model", "inception_v4"]) == 0


def test_non_vendor_files(tmp_path):
    ours = _write(tmp_path, {"train": {"epochs": 2}}, "ours.yaml")
    with pytest.raises(UserError, match="already a recipe of ours"):
        convert_file(ours)
    with pytest.raises(UserError, match="neither a MindSpore model-zoo config"):
        convert_file(_write(tmp_path, {"foo": 1}, "other.yaml"))
    two = _write(tmp_path, "train: {epochs: 2}\n---\ntrain: {epochs: 3}\n", "two.yaml")
    with pytest.raises(UserError, match="holds 2 YAML documents"):
        load_config(two)
    assert len(read_documents(MS_GOOGLENET)) == 3
    with pytest.raises(UserError, match="unknown config key 'foo'"):   # not a vendor file: our own checks
        load_config(_write(tmp_path, {"foo": 1}, "other.yaml"))


def test_googlenet_v1_recipe_is_paddleclas_googlenet_with_amp():
    """configs/googlenet_v1_paddleclas.yaml = PaddleClas's GoogLeNet.yaml + AMP O1, scale 128, dynamic."""
    tree = _tree(PD_GOOGLENET)
    tree["AMP"] = {"scale_loss": 128.0, "use_dynamic_loss_scaling": True, "level": "O1"}
    theirs = Config()
    apply(theirs, translate(tree, "GoogLeNet.yaml").recipe, "")
    ours = load_config(Path(__file__).resolve().parents[1] / "configs" / "googlenet_v1_paddleclas.yaml",
                       {"data.data_dir": "x"})
    for section, keys in {"model": ("name", "options", "aux_weight"), "optim": ("name", "lr", "momentum",
                          "weight_decay", "no_decay_bn_bias"), "schedule": ("name", "warmup_epochs", "warmup_start"),
                          "train": ("epochs", "batch_size", "precision", "loss_scale", "dynamic_loss_scale")}.items():
        for key in keys:
            assert getattr(getattr(ours, section), key) == getattr(getattr(theirs, section), key), f"{section}.{key}"
    assert ours.data.image_size == theirs.data.image_size == 224
