"""Pooling of channels_last CUDA batches as two 1-D pools (layers.pool_nhwc_separable): the same
values and gradients as the 2-D pool, for every pool the zoo uses (checked here on the CPU, where
the math is the same; the models take this path on CUDA only)."""

import pytest
import torch
import torch.nn.functional as F

from inception.models.layers import AvgPool2d, MaxPool2d, pool_nhwc_separable

CASES = [  # (kernel, stride, padding, ceil_mode, height, width)
    (3, 2, 0, True, 112, 112), (3, 2, 0, True, 15, 14), (3, 1, 1, True, 28, 28), (2, 2, 0, True, 7, 7),
    (3, 2, 0, False, 35, 35), (3, 1, 1, False, 8, 9), (3, 2, 0, False, 1, 3),
]


@pytest.mark.parametrize("k,s,p,ceil,h,w", CASES)
@pytest.mark.parametrize("kind", ["max", "avg", "avg_include_pad"])
def test_separable_pool_matches_the_2d_pool(kind, k, s, p, ceil, h, w):
    if k == 3 and h < 3 and not ceil:
        h = 3
    gen = torch.Generator().manual_seed(k * 100 + h)
    x = torch.randn(2, 5, h, w, generator=gen, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    pool, extra = (F.max_pool2d, {}) if kind == "max" else (F.avg_pool2d, {"count_include_pad": kind != "avg"})
    ref = pool(x, k, s, p, ceil_mode=ceil, **extra)
    out = pool_nhwc_separable(x, pool, k, s, p, ceil, **extra)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (ref_grad,) = torch.autograd.grad(ref, x, g)
    (grad,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(grad, ref_grad)


def test_pool_modules_keep_the_plain_path_off_cuda():
    """On a CPU (and for NCHW batches) the modules are nn.MaxPool2d / nn.AvgPool2d exactly."""
    x = torch.randn(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    assert torch.equal(MaxPool2d(3, 2, ceil_mode=True)(x), F.max_pool2d(x, 3, 2, ceil_mode=True))
    assert torch.equal(AvgPool2d(3, 1, 1, count_include_pad=False)(x),
                       F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    assert MaxPool2d(3, 2).state_dict() == {} and "MaxPool2d(kernel_size=3" in repr(MaxPool2d(3, 2))
