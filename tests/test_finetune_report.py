"""Fine-tuning (frozen backbone, backbone lr scale, frozen BatchNorm), the time limit, plots,
the eval report, `inception runs`, TensorBoard and command-line polish."""

import json
import os
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image

from inception.cli import build_parser, main
from inception.config import load_config
from inception.engine.checkpoint import load_checkpoint
from inception.engine.finetune import is_head
from inception.engine.loop import train
from inception.errors import UserError
from inception.runs import write_status

from .conftest import three_class_folder, write_images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return three_class_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    write_images(root / "train", {"apple": 8, "pear": 8}, size=40, seed=3)
    write_images(root / "val", {"apple": 2, "pear": 2}, size=40, seed=4)
    return root


def _cfg(data, out, **overrides):
    return load_config(None, {"model.name": "googlenet", "data.dataset": "folder", "data.data_dir": str(data),
                              "data.image_size": 16, "data.workers": 0, "train.batch_size": 8, "train.epochs": 1,
                              "train.log_interval": 1, "train.device": "cpu", "train.output_dir": str(out),
                              **overrides})


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """A 3-class checkpoint to fine-tune from."""
    out = tmp_path_factory.mktemp("pre") / "run"
    train(_cfg(data, out), progress=False)
    return out / "checkpoints" / "last.pt"


def _state(model_dir):
    return load_checkpoint(model_dir / "checkpoints" / "last.pt")["model"]


def test_finetune_with_a_frozen_backbone_changes_only_the_head(pretrained, two_classes, tmp_path, caplog):
    out = tmp_path / "ft"
    train(_cfg(two_classes, out, **{"model.pretrained": str(pretrained), "model.freeze_backbone": True,
                                    "train.epochs": 2}), progress=False)
    before, after = load_checkpoint(pretrained)["model"], _state(out)
    assert after["fc.weight"].shape == (2, 1024) and before["fc.weight"].shape == (3, 1024)
    assert "re-initialis" in caplog.text or "classifier" in caplog.text
    changed = [k for k in after if k in before and before[k].shape == after[k].shape
               and not torch.equal(before[k], after[k]) and not k.endswith("num_batches_tracked")]
    assert changed == [], f"frozen tensors changed: {changed[:5]}"     # weights and BatchNorm statistics alike
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["class_names"] == ["apple", "pear"]
    assert not torch.equal(after["fc.weight"], torch.zeros_like(after["fc.weight"]))


def test_backbone_lr_scale_and_frozen_batchnorm(pretrained, two_classes, tmp_path):
    out = tmp_path / "ft"
    train(_cfg(two_classes, out, **{"model.pretrained": str(pretrained), "model.backbone_lr_scale": 0.1,
                                    "model.freeze_bn": True, "schedule.name": "constant", "optim.lr": 0.05}),
          progress=False)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    lrs = sorted({round(g["lr"], 6) for g in ckpt["optimizer"]["param_groups"]})
    assert lrs == [0.005, 0.05]
    before, after = load_checkpoint(pretrained)["model"], ckpt["model"]
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)        # BN statistics frozen
    assert not torch.equal(before["conv1.conv.weight"], after["conv1.conv.weight"])   # weights still train


def test_head_is_the_classifier_and_aux_heads():
    from inception import create_model

    m = create_model("googlenet", num_classes=3, aux_logits=True)
    heads = {n.split(".")[0] for n, _ in m.named_parameters() if is_head(m, n)}
    assert heads == {"fc", "aux1", "aux2"}
    m = create_model("inception_v4", num_classes=3)
    assert {n.split(".")[0] for n, _ in m.named_parameters() if is_head(m, n)} == {"last_linear"}


def test_time_limit_stops_within_one_step(data, tmp_path, monkeypatch, capsys):
    import inception.engine.step as tr  # where the training step computes its loss

    calls = []
    real = tr.compute_loss

    def slow(*a, **k):
        calls.append(time.monotonic())
        time.sleep(0.4)
        return real(*a, **k)
    monkeypatch.setattr(tr, "compute_loss", slow)
    out = tmp_path / "run"
    args = ["train", "--model", "googlenet", "--data-dir", str(data), "--output-dir", str(out),
            "--set", "data.dataset=folder", "--set", "data.image_size=16", "--set", "data.workers=0",
            "--set", "train.batch_size=8", "--epochs", "50", "--set", "train.device=cpu", "--time-limit", "6s"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    record = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "time_limit" in x][-1]
    step = max(np.diff(calls))
    assert 6.0 <= record["elapsed_s"] <= 6.0 + step + 0.2, (record["elapsed_s"], step)
    assert "time limit 6s reached after" in printed and "val top-1" in printed and "loss" in printed
    assert load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] == record["step"] == len(calls)
    assert json.loads((out / "status.json").read_text())["reason"] == "time limit"
    with pytest.raises(UserError, match="train.time_limit '1 fortnight' is not a duration"):
        _cfg(data, tmp_path / "x", **{"train.time_limit": "1 fortnight"})


def _pixel_std(path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float32).std())


def test_plot_report_and_runs(data, pretrained, tmp_path, capsys):
    runs = tmp_path / "runs"
    a = runs / "a"
    train(_cfg(data, a, **{"train.epochs": 2}), progress=False)
    # an interrupted run: SIGTERM during its second step (checkpointed, resumable)
    import inception.engine.step as tr  # where the training step computes its loss

    real, calls = tr.compute_loss, []

    def preempted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    b = runs / "b"
    tr.compute_loss = preempted
    try:
        result = train(_cfg(data, b, **{"train.epochs": 2}), progress=False)
    finally:
        tr.compute_loss = real
    assert result.stopped_by == "SIGTERM" and result.global_step == 2
    # a run that was killed: its status says running, but its process is gone
    c = runs / "c"
    train(_cfg(data, c), progress=False)
    write_status(c, "running")
    status = json.loads((c / "status.json").read_text())
    status["pid"] = 2 ** 22 + 12345
    (c / "status.json").write_text(json.dumps(status))

    assert main(["plot", str(a), str(b), "-o", str(tmp_path / "cmp.png")]) == 0
    assert _pixel_std(tmp_path / "cmp.png") > 10
    assert main(["plot", str(a)]) == 0 and _pixel_std(a / "curves.png") > 10

    assert main(["eval", "--checkpoint", str(a), "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "most confused with" in out and "cat" in out and "fox" in out
    assert _pixel_std(tmp_path / "rep" / "confusion.png") > 10
    rows = (tmp_path / "rep" / "per_class.csv").read_text().splitlines()
    assert rows[0].startswith("class,images,correct,accuracy") and len(rows) == 4
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert np.asarray(report["confusion"]).sum() == report["count"] == 6

    assert main(["runs", str(runs)]) == 0
    table = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0].rsplit("/", 1)[-1]: line for line in table[1:]}
    assert "finished" in by_name["a"] and "2/2" in by_name["a"] and "googlenet" in by_name["a"]
    assert "interrupted (SIGTERM)" in by_name["b"] and "0/2" in by_name["b"]
    assert "failed (killed)" in by_name["c"]
    assert main(["runs", str(runs), "--json"]) == 0
    assert {r["status"] for r in json.loads(capsys.readouterr().out)} == {"finished", "interrupted (SIGTERM)",
                                                                         "failed (killed)"}
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert main(["runs", str(tmp_path / "nowhere")]) == 2


def test_failed_run_status(data, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(UserError):
        train(_cfg(data, out, **{"model.num_classes": 7}), progress=False)
    cfg = _cfg(data, out / "r2", **{"train.max_bad_steps": 1})
    import inception.engine.step as tr  # where the training step computes its loss

    real = tr.compute_loss
    tr.compute_loss = lambda *a, **k: (real(*a, **k)[0] * float("nan"), real(*a, **k)[1])
    try:
        with pytest.raises(UserError, match="NaN/Inf"):
            train(cfg, progress=False)
    finally:
        tr.compute_loss = real
    status = json.loads((out / "r2" / "status.json").read_text())
    assert status["status"] == "failed" and "NaN/Inf" in status["error"]


def test_tensorboard(data, tmp_path, monkeypatch):
    import builtins

    import inception.engine.metrics as metrics

    written = []

    class Writer:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append("closed")
    import types
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", fake)
    train(_cfg(data, tmp_path / "tb", **{"train.tensorboard": True}), progress=False)
    tags = {t for t, *_ in [w for w in written if w != "closed"]}
    assert {"step/loss", "step/lr", "epoch/val_top1", "epoch/train_loss"} <= tags and written[-1] == "closed"

    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *a, **k)
    monkeypatch.delitem(__import__("sys").modules, "torch.utils.tensorboard")
    monkeypatch.setattr(builtins, "__import__", no_tb)
    with pytest.raises(UserError, match="pip install tensorboard"):
        metrics.MetricsLog(tmp_path / "m.jsonl", tensorboard=tmp_path / "tbdir")


def test_help_lists_defaults_and_version(capsys):
    """Every option of every subcommand says its default in --help."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "eval", "plot", "runs", "prepare", "bench", "export", "infer", "check-data"} <= set(sub.choices)
    for name, p in sub.choices.items():
        formatter = p._get_formatter()
        for action in p._actions:
            if not action.option_strings or action.dest == "help" or action.required:
                continue
            shown = formatter._get_help_string(action) or ""
            assert "default" in shown.lower(), (name, action.option_strings, shown)
        assert "(default:" in p.format_help(), name
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "inception" in capsys.readouterr().out


def test_finetune_from_a_torchvision_weight_file(two_classes, tmp_path):
    """torchvision's googlenet state dict (.pth, 1000 classes) -> 2 classes, backbone frozen."""
    from torchvision.models import googlenet

    tv = googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    path = tmp_path / "googlenet-tv.pth"
    torch.save(tv.state_dict(), path)
    out = tmp_path / "ft"
    train(_cfg(two_classes, out, **{"model.pretrained": str(path), "model.freeze_backbone": True}), progress=False)
    after = _state(out)
    assert after["fc.weight"].shape == (2, 1024)
    assert torch.equal(after["conv1.conv.weight"], tv.state_dict()["conv1.conv.weight"])
    assert torch.equal(after["inception5b.branch1.bn.running_mean"],
                       tv.state_dict()["inception5b.branch1.bn.running_mean"])
