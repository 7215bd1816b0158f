"""EMA of the weights: torch's EMA update, decay warmup, skipped steps, checkpoints, best/eval, exact resume."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from inception.config import load_config
from inception.engine.amp import Precision
from inception.engine.checkpoint import load_checkpoint
from inception.engine.ema import ModelEma
from inception.engine.evaluate import evaluate_checkpoint, restore_model
from inception.engine.loop import resume_config, train
from inception.models import eval_weights

TINY = {"data.image_size": 16, "data.workers": 0, "train.epochs": 2, "train.batch_size": 64,
        "train.log_interval": 5, "optim.lr": 0.05, "schedule.warmup_epochs": 0.5, "train.ema_decay": 0.9}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _steps(model, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        yield


def test_matches_torch_ema_with_buffers():
    """Without warmup, the same update as AveragedModel(get_ema_multi_avg_fn(decay), use_buffers=True)."""
    model = _net()
    ours = ModelEma(model, 0.9)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ref.update_parameters(model)                  # torch's first update copies; ours starts from the copy
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in _steps(model, opt, 5):
        ours.update(model)
        ref.update_parameters(model)
    want = ref.module.state_dict()
    for k, v in ours.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, want[k], rtol=1e-6, atol=1e-7, msg=k)
        else:                                     # num_batches_tracked: a counter, copied (torch truncates it)
            assert torch.equal(v, model.state_dict()[k])
    bn = ours.module[1]
    assert not torch.equal(bn.running_mean, model[1].running_mean)   # BatchNorm statistics are averaged
    assert not torch.equal(bn.running_mean, torch.zeros(4))


def test_decay_warmup():
    ema = ModelEma(_net(), 0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(90) == pytest.approx(91 / 100)
    assert ema.decay_at(10 ** 6) == 0.999
    assert ModelEma(_net(), 0.999).decay_at(0) == 0.999


@pytest.mark.parametrize("precision", ["fp32", "fp16"])   # the guard's static scaler; torch's GradScaler
def test_skipped_step_leaves_the_ema_alone(precision):
    """Precision.step says on the device whether the step was applied; the EMA follows it."""
    model = _net()
    ema = ModelEma(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision(precision, torch.device("cpu"), guard=True)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    opt.zero_grad()
    precision.backward(nn.functional.cross_entropy(model(x), y) * float("nan"))   # BatchNorm statistics move ...
    applied = precision.step(opt, list(model.parameters()), None)
    assert applied.item() == 0.0
    ema.update(model, applied)                     # ... but a skipped step does not reach the EMA
    assert all(torch.equal(v, before[k]) for k, v in ema.module.state_dict().items() if v.is_floating_point())
    opt.zero_grad()
    precision.backward(nn.functional.cross_entropy(model(x), y))
    applied = precision.step(opt, list(model.parameters()), None)
    assert applied.item() == 1.0
    ema.update(model, applied)
    assert not torch.equal(ema.module[0].weight, before["0.weight"])


def test_state_dict_round_trip():
    model = _net()
    ema = ModelEma(model, 0.9, warmup=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in _steps(model, opt, 3):
        ema.update(model)
    other = ModelEma(_net(), 0.9, warmup=True)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3 and int(other.averaged.n_averaged) == 4
    assert all(torch.equal(a, b) for a, b in zip(other.module.state_dict().values(),
                                                 ema.module.state_dict().values()))


def _rows(run_dir, kind="epoch"):
    return [r for r in (json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == kind]


def test_run_evaluates_checkpoints_and_picks_the_better(tmp_path):
    cfg = load_config(None, {**TINY, "train.output_dir": str(tmp_path / "run"), "train.ema_warmup": True})
    result = train(cfg, progress=False)
    epochs = _rows(result.run_dir)
    for e in epochs:
        assert {"ema_val_top1", "ema_val_top5", "ema_val_loss", "best_source"} <= set(e)
        assert e["best_source"] == ("ema" if e["ema_val_top1"] > e["val_top1"] else "model")
    scores = [max(e["val_top1"], e["ema_val_top1"]) for e in epochs]
    assert result.best_top1 == max(scores)
    log = (result.run_dir / "train.log").read_text()
    assert "EMA top-1" in log and f"(best: {epochs[-1]['best_source']})" in log

    best = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    best_epoch = epochs[best["epoch"] - 1]
    assert best["best_source"] == best_epoch["best_source"] and best["ema_updates"] == best["global_step"]
    assert best["ema"].keys() == best["model"].keys()
    r = evaluate_checkpoint(result.run_dir / "checkpoints" / "best.pt", device="cpu")
    assert r["weights"] == best["best_source"]
    assert r["top1"] == pytest.approx(max(best_epoch["val_top1"], best_epoch["ema_val_top1"]))


def test_eval_and_export_take_the_ema_weights_when_they_won(tmp_path):
    r = train(load_config(None, {**TINY, "train.epochs": 1, "train.output_dir": str(tmp_path / "run")}),
              progress=False)
    path = r.run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    assert not all(torch.equal(ckpt["ema"][k], v) for k, v in ckpt["model"].items())
    for source in ("ema", "model"):
        ckpt["best_source"] = source
        forced = tmp_path / f"{source}.pt"
        torch.save(ckpt, forced)
        model = restore_model(forced)[0]
        want = eval_weights(ckpt)
        assert want is ckpt[source]
        assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())


@pytest.mark.slow   # two runs (~16 s); `make test-slow` and CI run it
def test_resume_mid_epoch_keeps_the_ema_exactly(tmp_path):
    """Interrupted after step 5 of epoch 1 and resumed: the EMA (and the model) end bit-identical."""
    over = {**TINY, "train.ckpt_interval": 5, "train.keep_checkpoint_max": 50, "train.ema_warmup": True}
    full = train(load_config(None, {**over, "train.output_dir": str(tmp_path / "full")}), progress=False)
    ck = full.run_dir / "checkpoints" / "step_00000005.pt"
    assert load_checkpoint(ck)["ema_updates"] == 5
    res = train(resume_config(ck, {"train.output_dir": str(tmp_path / "resumed")}), resume=ck, progress=False)
    assert res.global_step == full.global_step
    want, got = (load_checkpoint(Path(d) / "checkpoints" / "last.pt") for d in (full.run_dir, res.run_dir))
    assert got["ema_updates"] == want["ema_updates"] == full.global_step
    for part in ("ema", "model"):
        different = [k for k in want[part] if not torch.equal(got[part][k], want[part][k])]
        assert not different, f"{part}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_ema_off_by_default_and_validated(tmp_path):
    from inception.errors import UserError

    assert load_config(None).train.ema_decay is None
    with pytest.raises(UserError, match="train.ema_decay"):
        load_config(None, {"train.ema_decay": 1.0})
