"""Mixed precision on CPU: bf16 autocast training, fp16 static and dynamic loss scaling."""

import pytest
import torch
from torch import nn

from inception.config import load_config
from inception.engine.amp import Precision, StaticLossScaler
from inception.engine.checkpoint import load_checkpoint
from inception.engine.loop import train

from ..conftest import three_class_folder


def _params_and_opt():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_static_scaler_unscales_exactly_and_skips_overflow():
    model, opt = _params_and_opt()
    prec = Precision("fp16", torch.device("cpu"), loss_scale=1024)
    assert isinstance(prec.scaler, StaticLossScaler) and prec.scaler.get_scale() == 1024
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    ref_grad = torch.autograd.grad(loss, model.weight, retain_graph=True)[0]
    before = model.weight.detach().clone()
    opt.zero_grad()
    prec.backward(loss)
    assert torch.allclose(model.weight.grad, ref_grad * 1024, rtol=1e-5)
    prec.step(opt, model.parameters(), grad_clip=None)
    torch.testing.assert_close(model.weight.detach(), before - 0.1 * ref_grad)   # unscaled before the step
    # an overflowing step is skipped and counted; the scale stays fixed
    opt.zero_grad()
    prec.backward(model(x).sum() * float("inf"))
    after_good = model.weight.detach().clone()
    prec.step(opt, model.parameters(), grad_clip=None)
    assert torch.equal(model.weight, after_good) and prec.scaler.skipped == 1 and prec.scaler.get_scale() == 1024
    state = prec.state_dict()
    other = Precision("fp16", torch.device("cpu"), loss_scale=8)
    other.load_state_dict(state)
    assert other.scaler.get_scale() == 1024 and other.scaler.skipped == 1


def test_dynamic_scaler_backs_off_on_overflow_and_clips_unscaled_grads():
    model, opt = _params_and_opt()
    prec = Precision("fp16", torch.device("cpu"))
    assert isinstance(prec.scaler, torch.amp.GradScaler)
    start = prec.scaler.get_scale()
    x = torch.randn(8, 4)
    opt.zero_grad()
    prec.backward(model(x).sum() * float("inf"))
    before = model.weight.detach().clone()
    prec.step(opt, model.parameters(), grad_clip=1.0)
    assert torch.equal(model.weight, before) and prec.scaler.get_scale() == start / 2
    # gradients are unscaled before clipping: the clipped norm is the true one, <= 1
    opt.zero_grad()
    prec.backward(model(x).pow(2).sum() * 100)
    prec.scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert norm > 1.0
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
    assert total <= 1.0 + 1e-4


def test_fp32_has_no_autocast_or_scaler():
    prec = Precision("fp32", torch.device("cpu"))
    assert prec.scaler is None and prec.state_dict() == {}
    with prec.autocast():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError):
        Precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_mixed_precision_training_on_cpu_keeps_fp32_weights_and_bn(tmp_path, precision):
    # A tiny folder dataset (3 steps): bf16 kernels are slow on CPUs without bf16 instructions.
    data = three_class_folder(tmp_path / "data")
    cfg = load_config(None, {"data.dataset": "folder", "data.data_dir": str(data), "data.image_size": 16,
                             "data.workers": 0, "train.epochs": 1, "train.batch_size": 8,
                             "train.precision": precision, "train.log_interval": 1, "optim.lr": 0.05,
                             "train.output_dir": str(tmp_path / precision)})
    if precision == "fp16":
        cfg.train.loss_scale = 128.0
    result = train(cfg, progress=False)
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    assert ckpt["model"]["conv1.bn.running_var"].dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.last_metrics["val_count"] == 6 and len(result.losses) == 3
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] == 128.0


def test_dynamic_scale_starts_at_loss_scale():
    """PaddleClas's AMP (scale_loss 128, use_dynamic_loss_scaling): dynamic from 128."""
    model, opt = _params_and_opt()
    prec = Precision("fp16", torch.device("cpu"), loss_scale=128, dynamic=True)
    assert isinstance(prec.scaler, torch.amp.GradScaler) and prec.scaler.get_scale() == 128
    opt.zero_grad()
    prec.backward(model(torch.randn(8, 4)).sum() * float("inf"))
    prec.step(opt, model.parameters(), grad_clip=None)
    assert prec.scaler.get_scale() == 64                          # halved on overflow
    assert Precision("fp16", torch.device("cpu")).scaler.get_scale() == 2.0**16
    assert isinstance(Precision("fp16", torch.device("cpu"), loss_scale=128).scaler, StaticLossScaler)
