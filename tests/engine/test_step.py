"""The training step shared by the trainer and `inception bench model` (engine/step.py)."""

import math

import pytest
import torch
from torch import nn

from inception import accel
from inception.config import COMPILE_MODES, load_config
from inception.engine.amp import Precision
from inception.engine.evaluate import evaluate
from inception.engine.step import TrainStep, check_compile_mode, compute_loss
from inception.errors import UserError
from inception.models import AuxOutputs

CPU = torch.device("cpu")


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def _batches(n=4, sizes=(6, 6, 6, 4)):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(b, 3, 8, 8, generator=gen), torch.randint(0, 4, (b,), generator=gen)) for b in sizes[:n]]


def _run_step(compile: bool, batches) -> tuple[list[float], nn.Module, TrainStep]:
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = TrainStep(model, nn.CrossEntropyLoss(), Precision("fp32", CPU, guard=True), opt, list(model.parameters()),
                     compile=compile)
    losses = [step(x, y)[0].item() for x, y in batches]
    return losses, model, step


def test_step_is_the_plain_loop():
    """Eager, the step is exactly: zero_grad, forward, loss, backward, optimizer step."""
    batches = _batches()
    losses, model, step = _run_step(False, batches)
    ref = _tiny()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    expected = []
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ref(x), y)
        loss.backward()
        opt.step()
        expected.append(loss.item())
    assert losses == expected and step.what == "eager" and step.compiled is None
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_a_non_finite_step_is_skipped():
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(model, nn.CrossEntropyLoss(), Precision("fp32", CPU, guard=True), opt, list(model.parameters()))
    x = torch.full((2, 3, 8, 8), float("nan"))
    loss, _, applied = step(x, torch.tensor([0, 1]))
    assert not math.isfinite(loss.item()) and applied.item() == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_compute_loss_reads_torchvision_tuples():
    """torchvision's GoogLeNetOutputs (logits, aux2, aux1) and InceptionOutputs (logits, None) are
    plain tuples: the first is the logits, the rest (not None) the auxiliary heads."""
    gen = torch.Generator().manual_seed(0)
    main, a1, a2 = (torch.randn(3, 5, generator=gen) for _ in range(3))
    target = torch.tensor([0, 1, 4])
    ce = nn.CrossEntropyLoss()
    ours, _ = compute_loss(AuxOutputs(main, (a1, a2)), target, ce, 0.3)
    theirs, logits = compute_loss((main, a2, a1), target, ce, 0.3)
    assert torch.allclose(ours, theirs) and logits is main
    alone, _ = compute_loss((main, None), target, ce, 0.3)
    assert torch.allclose(alone, ce(main, target))


def test_compile_modes_are_checked():
    assert COMPILE_MODES == ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    with pytest.raises(ValueError, match="compile mode must be one of"):
        check_compile_mode("fast")
    with pytest.raises(UserError, match="compile_mode"):
        load_config(None, {"train.compile_mode": "fast"})
    cfg = load_config(None, {})
    assert cfg.train.compile is None and cfg.train.compile_mode == "default" and cfg.train.tta_flip is False
    assert accel.compile_default(torch.device("cuda")) and not accel.compile_default(CPU)
    assert not accel.compile_default(torch.device("mps"))


@pytest.mark.slow
def test_compiled_step_matches_eager_and_runs_other_shapes_eagerly():
    """Compiled (inductor, on the CPU: ~20 s), the step gives eager's losses; the short last batch
    runs eagerly instead of compiling again."""
    batches = _batches()
    eager, _, _ = _run_step(False, batches)
    compiled, _, step = _run_step(True, batches)
    assert step.what == "compiled step (torch.compile mode default)" and step.shape == ((6, 3, 8, 8), (6,))
    assert step.eager_steps == 1
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_flip_tta_averages_each_image_with_its_mirror():
    model = _tiny().eval()
    x, y = _batches(1)[0]
    plain = evaluate(model, [(x, y)], CPU)
    flipped = evaluate(model, [(x, y)], CPU, flip=True)
    with torch.no_grad():
        logits = (model(x) + model(x.flip(-1))) / 2
    expected = nn.functional.cross_entropy(logits, y).item()
    assert flipped["loss"] == pytest.approx(expected, rel=1e-5) and flipped["count"] == plain["count"] == 6
    assert flipped["top1"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
