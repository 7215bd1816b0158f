"""Optimizers and LR schedules, checked against the seeds' formulas."""

import math

import pytest
import torch
from torch import nn

from inception.config import OptimCfg, ScheduleCfg
from inception.engine.optim import RMSpropTF, build_optimizer, build_scheduler, lr_factor_fn, param_groups


def _lrs(cfg: ScheduleCfg, lr: float, spe: int, epochs: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch=spe, epochs=epochs)
    out = []
    for _ in range(spe * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_matches_seed_exponential():
    """MindSpore googlenet imagenet: lr = 0.1 * 0.3 ** (number of lr_epochs passed)."""
    spe, epochs = 10, 300
    lrs = _lrs(ScheduleCfg(name="step", milestones=[70, 140, 210, 280], gamma=0.3), 0.1, spe, epochs)
    for epoch in (0, 69, 70, 139, 140, 209, 210, 279, 280, 299):
        expected = 0.1 * 0.3 ** sum(epoch >= m for m in (70, 140, 210, 280))
        assert lrs[epoch * spe] == pytest.approx(expected)
        assert lrs[epoch * spe + spe - 1] == pytest.approx(expected)


def test_multistep_fraction_schedule_matches_seed():
    """MindSpore googlenet cifar10: lr x0.1 at steps 0.3, 0.6, 0.8 of total steps."""
    spe, epochs = 390, 125
    total = spe * epochs
    f = lr_factor_fn(ScheduleCfg(name="multistep", fractions=[0.3, 0.6, 0.8], gamma=0.1), lr=0.1,
                     steps_per_epoch=spe, epochs=epochs)
    b = [int(0.3 * total), int(0.6 * total), int(0.8 * total)]
    assert f(0) == 1.0 and f(b[0] - 1) == 1.0
    assert f(b[0]) == pytest.approx(0.1) and f(b[1] - 1) == pytest.approx(0.1)
    assert f(b[1]) == pytest.approx(0.01) and f(b[2]) == pytest.approx(0.001) and f(total - 1) == pytest.approx(0.001)


def test_warmup_then_cosine():
    spe, epochs, lr = 100, 10, 0.4
    cfg = ScheduleCfg(name="cosine", warmup_epochs=2, warmup_start=0.0, eta_min=0.004)
    lrs = _lrs(cfg, lr, spe, epochs)
    warm, total = 200, 1000
    assert lrs[0] == 0.0
    assert lrs[100] == pytest.approx(lr * 100 / warm)
    assert lrs[warm] == pytest.approx(lr)
    for s in (300, 500, 999):
        t = (s - warm) / (total - warm)
        assert lrs[s] == pytest.approx(0.004 + (lr - 0.004) * 0.5 * (1 + math.cos(math.pi * t)))
    assert max(lrs) == pytest.approx(lr)


def test_constant_with_fractional_warmup():
    f = lr_factor_fn(ScheduleCfg(name="constant", warmup_epochs=0.5, warmup_start=0.1), lr=1.0,
                     steps_per_epoch=20, epochs=2)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.1 + 0.9 * 0.5) and f(10) == 1.0 and f(39) == 1.0


@pytest.mark.parametrize("cfg", [ScheduleCfg(name="cosine", warmup_epochs=1), ScheduleCfg(name="onecycle"),
                                 ScheduleCfg(name="flat_cosine", warmup_epochs=1)])
def test_scheduler_state_survives_resume(cfg):
    full = _lrs(cfg, 0.1, 10, 5)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=5)
    for _ in range(23):
        opt.step()
        sched.step()
    state_o, state_s = opt.state_dict(), sched.state_dict()
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=10, epochs=5)
    opt2.load_state_dict(state_o)
    sched2.load_state_dict(state_s)
    rest = []
    for _ in range(50 - 23):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == pytest.approx(full[23:])


def test_no_weight_decay_for_bn_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    groups = param_groups(model, 1e-4, True)
    assert groups[0]["weight_decay"] == 1e-4 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0 and len(groups[1]["params"]) == 4  # conv bias, bn w/b, fc bias
    assert len(param_groups(model, 1e-4, False)) == 1


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adamw"])
def test_build_optimizers(name):
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, OptimCfg(name=name, lr=0.01, nesterov=True, eps=1.0 if name == "rmsprop" else 1e-8))
    loss = model(torch.ones(4, 3)).pow(2).sum()
    loss.backward()
    before = model.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.weight)
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"]


def test_rmsprop_tf_formula():
    """Two steps by hand: ms starts at 1, eps inside the sqrt, lr inside the momentum."""
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=0.01)
    ms, mom, value = torch.ones(2), torch.zeros(2), p.detach().clone()
    for g in (torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.25])):
        p.grad = g.clone()
        opt.step()
        gg = g + 0.01 * value
        ms = 0.9 * ms + 0.1 * gg * gg
        mom = 0.9 * mom + 0.1 * gg / torch.sqrt(ms + 1.0)
        value = value - mom
        torch.testing.assert_close(p.detach(), value)


@pytest.mark.parametrize("spe,epochs,pct,div,final", [(10, 5, 0.3, 25.0, 1e4), (7, 3, 0.25, 10.0, 100.0),
                                                      (148, 5, 0.2, 20.0, 1e3)])
def test_onecycle_matches_torch(spe, epochs, pct, div, final):
    """lr at every step equals torch's OneCycleLR (cosine annealing, two phases)."""
    cfg = ScheduleCfg(name="onecycle", pct_start=pct, div_factor=div, final_div_factor=final)
    ours = _lrs(cfg, 0.4, spe, epochs)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=spe * epochs, pct_start=pct,
                                              div_factor=div, final_div_factor=final, anneal_strategy="cos",
                                              three_phase=False, cycle_momentum=False)
    theirs = []
    for _ in range(spe * epochs):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    assert ours[0] == pytest.approx(0.4 / div) and 0.39 < max(ours) <= 0.4 + 1e-12   # the peak falls between steps
    assert ours[-1] == pytest.approx(0.4 / (div * final))


def test_flat_then_cosine():
    """fast.ai's fit_flat_cos after a warmup: the peak for flat_fraction of the steps after warmup, then cosine."""
    spe, epochs, lr = 10, 10, 0.2
    cfg = ScheduleCfg(name="flat_cosine", warmup_epochs=1, warmup_start=0.1, flat_fraction=0.5, eta_min=0.002)
    lrs = _lrs(cfg, lr, spe, epochs)
    warm, total = 10, 100
    flat_end = warm + 0.5 * (total - warm)       # step 55
    assert lrs[0] == pytest.approx(0.1 * lr) and lrs[5] == pytest.approx(lr * (0.1 + 0.9 * 0.5))
    assert all(v == pytest.approx(lr) for v in lrs[warm:56])
    for s in (60, 80, 99):
        t = (s - flat_end) / (total - flat_end)
        assert lrs[s] == pytest.approx(0.002 + (lr - 0.002) * 0.5 * (1 + math.cos(math.pi * t)))
    assert lrs == sorted(lrs[:warm + 1]) + lrs[warm + 1:] and lrs[warm:] == sorted(lrs[warm:], reverse=True)
    plain = lr_factor_fn(ScheduleCfg(name="flat_cosine", flat_fraction=0.0), lr=1.0, steps_per_epoch=10, epochs=2)
    cosine = lr_factor_fn(ScheduleCfg(name="cosine"), lr=1.0, steps_per_epoch=10, epochs=2)
    assert [plain(s) for s in range(20)] == [cosine(s) for s in range(20)]   # flat_fraction 0 is cosine
