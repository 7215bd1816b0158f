"""inception models --init-gradients: how hard one SGD step hits each convolution at init."""

import math

from inception.cli import main
from inception.engine.diagnose import init_gradient_scale


def test_deeper_batchnorm_stems_get_larger_gradients_relative_to_their_weights():
    g = init_gradient_scale("googlenet", image_size=80, batch_size=4)
    v4 = init_gradient_scale("inception_v4", image_size=80, batch_size=4)
    for r in (g, v4):
        assert math.isfinite(r.grad_norm) and r.grad_norm > 0 and r.max_ratio >= r.median_ratio > 0
    assert g.max_layer == "conv1.conv"              # GoogLeNet's 7x7 stem
    assert v4.max_ratio > 5 * g.max_ratio           # the measured reason v4 needs AdamW in 5 epochs
    assert init_gradient_scale("googlenet", image_size=80, batch_size=4) == g      # seeded: repeatable


def test_cli_prints_one_row_per_model(capsys):
    assert main(["models", "googlenet", "--init-gradients", "--image-size", "32", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "batch 2, 32x32" in out and out.strip().splitlines()[-1].startswith("googlenet ")
