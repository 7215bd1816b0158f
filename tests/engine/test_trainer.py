"""End-to-end training and evaluation at tiny resolution, through every dataset format."""

import json
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from inception import accel
from inception.cli import main
from inception.config import load_config
from inception.engine.checkpoint import load_checkpoint
from inception.engine.evaluate import evaluate_checkpoint
from inception.engine.loop import resume_config, train
from inception.errors import UserError

from ..data.conftest import write_image
from ..data.test_cifar import write_cifar

CIFAR_JPG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpg.tar.gz"

# A tiny, fast run: GoogLeNet at 16x16 on the digits, no workers.
TINY = {"data.image_size": 16, "data.workers": 0, "train.epochs": 2, "train.batch_size": 64,
        "train.log_interval": 5, "optim.lr": 0.05, "schedule.warmup_epochs": 0.5}


def _cfg(tmp_path, name="run", **overrides):
    return load_config(None, {**TINY, "train.output_dir": str(tmp_path / name), **overrides})


def _rows(run_dir, kind):
    return [r for r in (json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == kind]


@pytest.mark.parametrize("fail", [False, True])
def test_speed_settings_are_put_back_after_training(tmp_path, monkeypatch, fail):
    """train() sets the device's speed flags (cuDNN autotuning, TF32) and restores them when it
    returns or raises: a caller's own settings survive a training run."""
    events = []

    def tune(device):
        events.append("set")
        return lambda: events.append("restored")
    monkeypatch.setattr(accel, "tune_for_speed", tune)
    cfg = _cfg(tmp_path, **{"train.epochs": 1, **({"model.num_classes": 3} if fail else {})})
    if fail:                                   # 3 outputs for 10 digit classes: a UserError in setup
        with pytest.raises(UserError):
            train(cfg, progress=False)
    else:
        train(cfg, progress=False)
    assert events == ["set", "restored"]


def test_digits_run_writes_everything_and_eval_agrees(tmp_path):
    cfg = _cfg(tmp_path, **{"train.ckpt_interval": 7, "train.keep_checkpoint_max": 2})
    result = train(cfg, progress=False)
    run = result.run_dir
    assert (run / "config.yaml").is_file() and (run / "train.log").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["image_size"] == 16
    steps = _rows(run, "step")
    epochs = _rows(run, "epoch")
    assert len(epochs) == 2 and all({"val_top1", "val_top5", "val_loss", "ms_per_step", "train_loss",
                                     "epoch_time_s"} <= set(e) for e in epochs)
    assert all({"loss", "lr", "img_per_s", "epoch", "step"} <= set(s) for s in steps)
    ckdir = run / "checkpoints"
    periodic = sorted(p.name for p in ckdir.glob("step_*.pt"))
    assert len(periodic) == 2 and (ckdir / "last.pt").is_file() and (ckdir / "best.pt").is_file()
    ckpt = load_checkpoint(ckdir / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "global_step", "config", "class_names"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == result.global_step
    assert ckpt["class_names"] == [str(i) for i in range(10)]
    assert (run / "train.log").stat().st_size > 0 and "epoch 2/2" in (run / "train.log").read_text()
    auto = accel.speed_defaults(torch.device("cpu"))       # train.precision auto, train.channels_last null
    assert f"speed: {auto.describe(auto.precision, auto.channels_last)}" in (run / "train.log").read_text()

    r = evaluate_checkpoint(run, device="cpu", json_path=tmp_path / "eval.json")
    assert r["count"] == epochs[-1]["val_count"]
    assert r["top1"] == pytest.approx(epochs[-1]["val_top1"])
    assert json.loads((tmp_path / "eval.json").read_text())["top1"] == pytest.approx(r["top1"])


def test_fp32_nchw_is_one_flag_away(tmp_path):
    """--precision fp32 with train.channels_last=false is today's plain path, named in the log;
    eval takes the same choice."""
    out = tmp_path / "plain"
    argv = ["train", "--epochs", "1", "--output-dir", str(out), "--precision", "fp32", "--set",
            "train.channels_last=false"] + [f"--set={k}={v}" for k, v in TINY.items() if k != "train.epochs"]
    assert main(argv) == 0
    log = (out / "train.log").read_text()
    assert "speed: fp32 + NCHW (" in log
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["precision"] == "fp32"
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    fp32 = evaluate_checkpoint(out, device="cpu", precision="fp32", channels_last=False)
    assert fp32["top1"] == pytest.approx(ckpt["metrics"]["val_top1"])       # the same path as the run's eval
    assert (fp32["precision"], fp32["channels_last"]) == ("fp32", False) and fp32["speed"].startswith("fp32 + NCHW")
    bf16 = evaluate_checkpoint(out, device="cpu", precision="bf16", channels_last=True)
    assert bf16["speed"].startswith("bf16 autocast + channels_last") and bf16["count"] == fp32["count"]
    assert abs(bf16["top1"] - fp32["top1"]) <= 5.0
    with pytest.raises(UserError, match="precision 'int8' is not valid; choose auto, fp32, bf16, fp16"):
        evaluate_checkpoint(out, device="cpu", precision="int8")


def test_seeded_cpu_runs_repeat_exactly(tmp_path):
    a = train(_cfg(tmp_path, "a", **{"train.epochs": 1}), progress=False)
    b = train(_cfg(tmp_path, "b", **{"train.epochs": 1}), progress=False)
    assert a.losses == b.losses and len(a.losses) >= 3
    c = train(_cfg(tmp_path, "c", **{"train.epochs": 1, "train.seed": 1}), progress=False)
    assert c.losses != a.losses


def test_resume_continues_epoch_step_and_lr_schedule(tmp_path):
    full = train(_cfg(tmp_path, "full", **{"train.epochs": 3, "train.keep_checkpoint_max": 50}), progress=False)
    spe = full.global_step // 3
    ck = full.run_dir / "checkpoints" / f"step_{spe:08d}.pt"          # the end of epoch 1
    state = load_checkpoint(ck)
    assert (state["epoch"], state["epoch_step"]) == (1, 0)
    cfg = resume_config(ck, {"train.output_dir": str(tmp_path / "resumed")})
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.05
    res = train(cfg, resume=ck, progress=False)
    assert res.global_step == full.global_step
    lr_full = {r["step"]: r["lr"] for r in _rows(full.run_dir, "step")}
    lr_res = {r["step"]: r["lr"] for r in _rows(tmp_path / "resumed", "step")}
    assert lr_res and all(lr_full[s] == pytest.approx(lr) for s, lr in lr_res.items())
    assert min(lr_res) > spe  # the resumed run did not start again at step 1
    assert [r["epoch"] for r in _rows(tmp_path / "resumed", "epoch")] == [2, 3]


def test_resume_from_mid_epoch_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "mid", **{"train.epochs": 2, "train.ckpt_interval": 5, "train.keep_checkpoint_max": 50})
    full = train(cfg, progress=False)
    ck = full.run_dir / "checkpoints" / "step_00000005.pt"
    state = load_checkpoint(ck)
    assert (state["epoch"], state["epoch_step"], state["global_step"]) == (0, 5, 5)
    res = train(resume_config(ck, {"train.output_dir": str(tmp_path / "mid2")}), resume=ck, progress=False)
    steps = [r["step"] for r in _rows(tmp_path / "mid2", "step")]
    assert steps[0] == 10 and res.global_step == full.global_step


def test_finished_run_cannot_resume_without_more_epochs(tmp_path):
    r = train(_cfg(tmp_path, "done", **{"train.epochs": 1}), progress=False)
    with pytest.raises(UserError, match="already finished 1 epochs; raise --epochs"):
        train(resume_config(r.run_dir), resume=r.run_dir, progress=False)
    more = train(resume_config(r.run_dir, {"train.epochs": 2}), resume=r.run_dir, progress=False)
    assert more.run_dir == r.run_dir and [e["epoch"] for e in _rows(r.run_dir, "epoch")] == [1, 2]


def test_resume_is_strict_and_names_the_keys(tmp_path):
    """A run resumes only the model it saved: other model options (here aux heads, or another
    number of classes) are an error naming the keys, not a silently re-initialised layer."""
    from inception.errors import CheckpointError
    r = train(_cfg(tmp_path, "own", **{"train.epochs": 1}), progress=False)
    aux = resume_config(r.run_dir, {"train.epochs": 2, "model.options": {"aux_logits": True}})
    with pytest.raises(CheckpointError, match=r"does not fit the model this run builds \(missing keys: aux1\.") as e:
        train(aux, resume=r.run_dir, progress=False)
    assert "--no-resume" in str(e.value)
    classes = resume_config(r.run_dir, {"train.epochs": 2, "model.num_classes": 10, "model.options": {"dropout": 0.3}})
    train(classes, resume=r.run_dir, progress=False)      # the same shapes: resumes
    wide = resume_config(r.run_dir, {"train.epochs": 3, "model.num_classes": 12})
    with pytest.raises(UserError, match="model.num_classes is 12 but the data has 10 classes"):
        train(wide, resume=r.run_dir, progress=False)


def test_aux_heads_and_label_smoothing_train(tmp_path):
    r = train(_cfg(tmp_path, "aux", **{"train.epochs": 1, "model.options": {"aux_logits": True},
                                        "train.label_smoothing": 0.1, "optim.name": "rmsprop", "optim.eps": 1.0,
                                        "optim.lr": 0.01, "optim.no_decay_bn_bias": True}), progress=False)
    ckpt = load_checkpoint(r.run_dir / "checkpoints" / "last.pt")
    assert any(k.startswith("aux1.") for k in ckpt["model"]) and ckpt["model_options"] == {"aux_logits": True}
    assert evaluate_checkpoint(r.run_dir, device="cpu")["count"] > 0


def test_user_errors_before_training(tmp_path):
    with pytest.raises(UserError, match="model.num_classes is 5 but the data has 10 classes"):
        train(_cfg(tmp_path, **{"model.num_classes": 5}), progress=False)
    with pytest.raises(UserError, match="below googlenet's minimum 15"):
        train(_cfg(tmp_path, **{"data.image_size": 8}), progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is not writable"):
        train(load_config(None, {**TINY, "train.output_dir": str(blocker / "run")}), progress=False)


def _tiny_files_run(tmp_path, dataset, data_dir, **extra):
    cfg = load_config(None, {"data.dataset": dataset, "data.data_dir": str(data_dir), "data.workers": 0,
                             "model.name": "googlenet_cifar", "data.image_size": 8, "train.epochs": 1,
                             "train.batch_size": 8, "train.log_interval": 2, "optim.lr": 0.01,
                             "train.output_dir": str(tmp_path / f"run-{dataset}"), **extra})
    result = train(cfg, progress=False)
    r = evaluate_checkpoint(result.run_dir, device="cpu")
    assert r["count"] > 0 and 0 <= r["top1"] <= 100
    return result


@pytest.mark.parametrize("layout", ["bin", "py"])
def test_cifar_files_end_to_end(tmp_path, layout):
    write_cifar(tmp_path / "data", "cifar10", layout)
    result = _tiny_files_run(tmp_path, "cifar10", tmp_path / "data")
    assert load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["class_names"][0] == "airplane"


def test_list_files_end_to_end(tmp_path):
    root = tmp_path / "data"
    lines = {"train": [], "val": []}
    for split, n in (("train", 8), ("val", 3)):
        for label in range(3):
            for i in range(n):
                rel = f"imgs/{split}_{label}_{i}.jpg"
                write_image(root / rel, size=(12, 10), seed=label * 100 + i)
                lines[split].append(f"{rel} {label}")
    (root / "train_list.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "val_list.txt").write_text("\n".join(lines["val"]) + "\n")
    result = _tiny_files_run(tmp_path, "list", root)
    assert load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["class_names"] == ["0", "1", "2"]


@pytest.fixture(scope="module")
def real_jpegs(tmp_path_factory):
    if not CIFAR_JPG.is_file():
        pytest.skip(f"{CIFAR_JPG} is not present")
    root = tmp_path_factory.mktemp("cifar-jpg")
    counts: dict = {}
    with tarfile.open(CIFAR_JPG, "r|gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in ("train", "test"):
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) >= (12 if parts[-3] == "train" else 4):
                if len(counts) == 20 and all(v >= (12 if k[0] == "train" else 4) for k, v in counts.items()):
                    break
                continue
            counts[key] = counts.get(key, 0) + 1
            dest = root / parts[-3] / parts[-2] / parts[-1]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
    (root / "test").rename(root / "val")
    return root


def test_folder_of_real_jpegs_end_to_end(tmp_path, real_jpegs):
    result = _tiny_files_run(tmp_path, "folder", real_jpegs, **{"data.image_size": 16, "data.augment": "imagenet",
                                                                 "data.crop_scale": [0.35, 1.0]})
    names = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["class_names"]
    assert names[0] == "airplane" and names[-1] == "truck" and len(names) == 10


def test_cli_train_and_eval(tmp_path, capsys):
    out_dir = tmp_path / "cli"
    rc = main(["train", "--epochs", "1", "--batch-size", "64", "--workers", "0", "--output-dir", str(out_dir),
               "--set", "data.image_size=16", "--set", "train.log_interval=100", "--lr", "0.05"])
    assert rc == 0
    assert "best val top-1" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out_dir), "--device", "cpu", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("top1=") and "top5=" in out and "images=360" in out
    assert main(["train", "--set", "optim.lrr=1"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown config key 'optim.lrr' (command line); "
                                               "did you mean 'optim.lr'?")
    assert main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--print-config", "--model", "inception_v4"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["name"] == "inception_v4"


@pytest.mark.slow
def test_compiled_channels_last_training(tmp_path):
    r = train(_cfg(tmp_path, "compiled", **{"train.epochs": 1, "train.compile": True, "train.channels_last": True}),
              progress=False)
    assert r.last_metrics["val_count"] == 360 and all(map(lambda v: v == v, r.losses))


def test_training_learns(tmp_path):
    """GoogLeNet at 16x16 for 2 epochs (AdamW, 88 steps, seconds): the digits' val top-1 climbs far
    above chance (10%; this seed reaches 57%)."""
    cfg = _cfg(tmp_path, "learn", **{"train.batch_size": 32, "optim.name": "adamw", "optim.lr": 0.002,
                                     "optim.weight_decay": 0.05, "train.log_interval": 10})
    result = train(cfg, progress=False)
    epochs = _rows(result.run_dir, "epoch")
    assert epochs[-1]["val_top1"] >= 40.0, epochs[-1]["val_top1"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] and result.losses[-1] < result.losses[0]


@pytest.mark.slow   # PaddleClas's GoogLeNet at 64 px for 3 epochs (about a minute on 2 cores)
def test_googlenet_v1_trains_with_its_aux_heads(tmp_path):
    """googlenet_v1 (no BatchNorm, two aux heads at 0.3) with the PaddleClas recipe's optimizer
    and warmup + cosine learns the digits: val top-1 far above chance (10%)."""
    cfg = _cfg(tmp_path, "v1", **{"model.name": "googlenet_v1", "model.options": {"aux_logits": True},
                                  "data.image_size": 64, "train.epochs": 3, "train.batch_size": 32,
                                  "optim.name": "sgd", "optim.lr": 0.01, "optim.momentum": 0.9,
                                  "optim.weight_decay": 1e-4, "schedule.name": "cosine",
                                  "schedule.warmup_epochs": 1, "train.log_interval": 10})
    result = train(cfg, progress=False)
    epochs = _rows(result.run_dir, "epoch")
    assert epochs[-1]["val_top1"] >= 50.0, epochs[-1]["val_top1"]
    assert result.losses[-1] < result.losses[0]


@pytest.mark.slow   # two 2-epoch runs (~25 s); `make test-slow` and CI run it
def test_mixing_erasing_and_progressive_sizes_train_and_resume_exactly(tmp_path):
    """MixUp + CutMix, random erasing and progressive resizing (6 then 8 px) on the digits
    (device-resident): a run resumed mid-way through epoch 2 logs the very losses of the
    uninterrupted run."""
    extra = {"model.name": "googlenet_cifar", "data.image_size": 8, "data.progressive_sizes": [6, 8],
             "data.mixup_alpha": 0.2, "data.cutmix_alpha": 1.0, "data.random_erasing": 0.25,
             "train.label_smoothing": 0.1, "train.batch_size": 128, "train.log_interval": 2,
             "train.ckpt_interval": 7, "train.keep_checkpoint_max": 50}
    full = train(_cfg(tmp_path, "full", **extra), progress=False)
    epochs = _rows(full.run_dir, "epoch")
    assert len(epochs) == 2 and all(0 <= e["train_top1"] <= 100 and e["val_count"] == 360 for e in epochs)
    ck = full.run_dir / "checkpoints" / "step_00000014.pt"             # epoch 2 (8 px), step 3 of 11
    assert (load_checkpoint(ck)["epoch"], load_checkpoint(ck)["epoch_step"]) == (1, 3)
    train(resume_config(ck, {"train.output_dir": str(tmp_path / "resumed")}), resume=ck, progress=False)
    want = {r["step"]: r["loss"] for r in _rows(full.run_dir, "step")}
    got = {r["step"]: r["loss"] for r in _rows(tmp_path / "resumed", "step")}
    assert len(got) >= 3 and min(got) > 14 and all(got[s] == pytest.approx(want[s], rel=1e-6) for s in got)
    assert _rows(tmp_path / "resumed", "epoch")[-1]["val_top1"] == pytest.approx(epochs[-1]["val_top1"])


def test_holdout_run_validates_on_the_held_out_train_images(tmp_path):
    result = train(_cfg(tmp_path, **{"train.epochs": 1, "data.holdout": 0.1}), progress=False)
    epoch = _rows(result.run_dir, "epoch")[-1]
    assert epoch["val_count"] == 142                     # a tenth of each digit class of the train split
    log = (result.run_dir / "train.log").read_text()
    assert "1295 train / 142 val images" in log
    assert "validation: 142 images held out of the train split 'train' (data.holdout 0.1" in log
    # `inception eval` of the run reports on the val split, the figure to publish
    assert evaluate_checkpoint(result.run_dir, device="cpu")["count"] == 360
    # --split holdout: the images the run validated on, with the run's own figure
    last = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    held = evaluate_checkpoint(result.run_dir / "checkpoints" / "last.pt", device="cpu", split="holdout")
    assert held["count"] == 142 and held["split"] == "holdout"
    assert held["top1"] == pytest.approx(last["metrics"]["val_top1"])


def test_eval_of_the_held_out_part_needs_a_holdout_run(tmp_path):
    train(_cfg(tmp_path, **{"train.epochs": 1}), progress=False)
    with pytest.raises(UserError, match="digits has the splits 'train' and 'test', not 'holdout' .*split 'holdout' "
                                        "names the held-out part of the train split only for a run trained with "
                                        "data.holdout; this one had data.holdout 0"):
        evaluate_checkpoint(tmp_path / "run", device="cpu", split="holdout")


def test_eval_at_another_size_and_crop(tmp_path, capsys):
    """--image-size / --crop-pct replace the run's eval preprocessing (timm's --img-size
    --crop-pct); the result names them, and sizes below the model's minimum or crop
    fractions outside (0, 1] are refused with the fix."""
    train(_cfg(tmp_path, **{"train.epochs": 1}), progress=False)
    run = tmp_path / "run"
    same = evaluate_checkpoint(run, device="cpu")
    assert (same["image_size"], same["crop_pct"]) == (16, 1.0)         # digits: the cifar preset, whole images
    other = evaluate_checkpoint(run, device="cpu", image_size=24, crop_pct=0.75)
    assert (other["image_size"], other["crop_pct"]) == (24, 0.75) and other["count"] == same["count"]
    assert other["top1"] != same["top1"] or other["loss"] != same["loss"]
    with pytest.raises(UserError, match="--image-size 4 is below googlenet's minimum input size"):
        evaluate_checkpoint(run, device="cpu", image_size=4)
    with pytest.raises(UserError, match=r"--crop-pct 1.5 must be in \(0, 1\]"):
        evaluate_checkpoint(run, device="cpu", crop_pct=1.5)
    assert main(["eval", "--checkpoint", str(run), "--image-size", "24", "--crop-pct", "1", "--device", "cpu"]) == 0
    assert "24 px crop_pct 1," in capsys.readouterr().out
    # a run with data.eval_image_size validates at that size (digits: batched on the device), and
    # eval takes it as the run's own
    result = train(_cfg(tmp_path, "bigger", **{"train.epochs": 1, "data.eval_image_size": 24}), progress=False)
    own = evaluate_checkpoint(result.run_dir, device="cpu")
    assert own["image_size"] == 24
    assert own["top1"] == pytest.approx(_rows(result.run_dir, "epoch")[-1]["val_top1"])
