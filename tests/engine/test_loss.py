"""The training loss of models with auxiliary heads, on logits written by hand."""

import math

import pytest
import torch
from torch import nn

from inception.engine.loop import compute_loss
from inception.engine.state import EpochTally
from inception.models import AuxOutputs, create_model


def _ce(row: list[float], target: int) -> float:
    """Cross-entropy of one row of logits, by the formula: log(sum(exp)) - logit[target]."""
    return math.log(sum(math.exp(x) for x in row)) - row[target]


MAIN = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
AUX1 = [[0.0, 1.0, 0.0], [-1.0, 3.0, 1.0]]      # the shallow head (after inception4a)
AUX2 = [[1.0, 1.0, 1.0], [0.0, -2.0, 4.0]]      # the deeper head (after inception4d)
TARGET = [0, 2]


def _mean_ce(rows):
    return sum(_ce(r, t) for r, t in zip(rows, TARGET)) / len(TARGET)


def test_aux_loss_is_main_plus_weighted_aux_heads():
    out = AuxOutputs(torch.tensor(MAIN), (torch.tensor(AUX1), torch.tensor(AUX2)))
    loss, logits = compute_loss(out, torch.tensor(TARGET), nn.CrossEntropyLoss(), aux_weight=0.3)
    expected = _mean_ce(MAIN) + 0.3 * (_mean_ce(AUX1) + _mean_ce(AUX2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(logits, torch.tensor(MAIN))                  # accuracy is measured on the main head only
    zero, _ = compute_loss(out, torch.tensor(TARGET), nn.CrossEntropyLoss(), aux_weight=0.0)
    assert zero.item() == pytest.approx(_mean_ce(MAIN), rel=1e-6)


def test_eval_mode_returns_plain_logits_and_their_loss():
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=3, aux_logits=True, stem="cifar")
    x = torch.randn(2, 3, 16, 16)
    assert isinstance(model.train()(x), AuxOutputs)
    with torch.no_grad():
        out = model.eval()(x)
    assert type(out) is torch.Tensor and out.shape == (2, 3)
    loss, logits = compute_loss(out, torch.tensor(TARGET), nn.CrossEntropyLoss(), aux_weight=0.3)
    assert logits is out
    assert loss.item() == pytest.approx(_mean_ce(out.tolist()), rel=1e-5)


def test_soft_targets_with_label_smoothing_and_their_train_top1():
    """MixUp / CutMix targets (rows of class probabilities) through the loop's loss: smoothing
    mixes each row with the uniform distribution, (1 - ls) * y + ls / C, then cross-entropy."""
    ls, classes = 0.1, 3
    soft = [[0.7, 0.3, 0.0], [0.0, 0.25, 0.75]]
    out = AuxOutputs(torch.tensor(MAIN), (torch.tensor(AUX1), torch.tensor(AUX2)))

    def soft_ce(rows):
        total = 0.0
        for row, target in zip(rows, soft):
            log_z = math.log(sum(math.exp(x) for x in row))
            total += -sum(((1 - ls) * t + ls / classes) * (x - log_z) for x, t in zip(row, target))
        return total / len(rows)

    loss, _ = compute_loss(out, torch.tensor(soft), nn.CrossEntropyLoss(label_smoothing=ls), aux_weight=0.3)
    assert loss.item() == pytest.approx(soft_ce(MAIN) + 0.3 * (soft_ce(AUX1) + soft_ce(AUX2)), rel=1e-6)
    tally = EpochTally(torch.device("cpu"))
    tally.add(loss, torch.tensor(MAIN), torch.tensor(soft))     # argmax of the targets: 0 and 2; predicted 0 and 0
    assert int(tally.correct) == 1 and tally.seen == 2
