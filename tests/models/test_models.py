"""The model zoo: exact parameter counts, the shared interface, aux heads, input checks."""

import pytest
import torch
from torch import nn

import inception
from inception.errors import UserError
from inception.models import AuxOutputs, count_macs, create_model, get_model_info, list_models, model_summary
from inception.models.layers import BlurMaxPool2d

from ..conftest import SMALL_SIZE

ALL = list(SMALL_SIZE)

# Reference implementations' counts at 1000 classes (torchvision / timm).
REFERENCE_PARAMS = [
    ("googlenet", {}, 6_624_904),
    ("googlenet", {"aux_logits": True}, 13_004_888),
    ("inception_v3", {}, 23_834_568),
    ("inception_v3", {"aux_logits": True}, 27_161_264),
    ("inception_v4", {}, 42_679_816),
    ("inception_resnet_v2", {}, 55_843_464),
]


def test_registry_lists_all_models():
    assert list_models() == sorted(ALL)
    assert list_models("inception_v*") == ["inception_v3", "inception_v4"]
    assert inception.list_models() == list_models()


@pytest.mark.parametrize("name,kwargs,expected", REFERENCE_PARAMS)
def test_parameter_counts_match_references(name, kwargs, expected):
    assert get_model_info(name, **kwargs).params == expected
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected


def _hook_macs(model: nn.Module, size: int) -> int:
    """An independent MAC count from forward hooks on Conv2d and Linear layers."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out.numel() * k
        else:
            total += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_macs_are_computed_and_agree_with_hooks(name):
    model = create_model(name, num_classes=10)
    size = SMALL_SIZE[name] + 16
    assert count_macs(model, (3, size, size)) == _hook_macs(model, size)
    # Published figures at the default size: torchvision 1.50 / 5.71 GMACs.
    expected = {"googlenet": 1.50e9, "inception_v3": 5.71e9}[name]
    assert get_model_info(name).macs == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name", ALL)
def test_common_interface(name):
    model = create_model(name, num_classes=7).eval()
    size = SMALL_SIZE[name]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.ndim == 4 and feats.shape[:2] == (2, model.num_features)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        logits = model.forward_head(feats)
        assert logits.shape == (2, 7)
        torch.testing.assert_close(model(x), logits)
    assert model.num_classes == 7

    model.reset_classifier(3)
    assert model.num_classes == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)

    dc = model.data_config
    assert dc.input_size[0] == 3 and dc.min_input_size <= dc.input_size[1]
    assert len(dc.mean) == len(dc.std) == 3 and 0 < dc.crop_pct <= 1


@pytest.mark.parametrize("name", ALL)
def test_minimum_input_size_is_exact(name):
    model = create_model(name, num_classes=4).eval()
    m = model.data_config.min_input_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, m, m)).shape == (1, 4)
        assert model(torch.randn(1, 3, m + 5, m + 1)).shape == (1, 4)
        with pytest.raises(ValueError, match=rf"{name}.*at least {m}x{m}"):
            model(torch.randn(1, 3, m - 1, m + 10))
    # Below the minimum the network itself cannot run: the check is not over-cautious.
    model._data_config = model.data_config.replace(min_input_size=1)
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            model(torch.randn(1, 3, m - 1, m - 1))


def test_min_input_sizes():
    assert {n: get_model_info(n).min_input_size for n in ALL} == {
        "googlenet": 15, "googlenet_cifar": 2, "googlenet_v1": 61, "inception_v3": 75, "inception_v4": 75,
        "inception_resnet_v2": 75}


def test_googlenet_aux_outputs_train_and_eval():
    model = create_model("googlenet", num_classes=5, aux_logits=True)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(x)
    assert isinstance(out, AuxOutputs)
    assert out.logits.shape == (2, 5) and len(out.aux) == 2
    assert all(a.shape == (2, 5) for a in out.aux)
    # aux[0] is the shallow head (after inception4a): it depends on aux1's weights only.
    with torch.no_grad():
        model.aux1.fc2.bias.add_(100.0)
    out2 = model(x)
    assert (out2.aux[0] - out.aux[0]).mean() > 50
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 5)
    model.reset_classifier(9)
    model.train()
    assert all(a.shape == (2, 9) for a in model(x).aux)


def test_inception_v3_aux_needs_full_size_in_train_mode():
    model = create_model("inception_v3", num_classes=3, aux_logits=True).train()
    with pytest.raises(ValueError, match="299x299"):
        model(torch.randn(2, 3, 100, 100))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 100, 100)).shape == (1, 3)


@pytest.mark.slow
def test_inception_v3_aux_train_forward_at_299():
    model = create_model("inception_v3", num_classes=3, aux_logits=True).train()
    out = model(torch.randn(2, 3, 299, 299))
    assert isinstance(out, AuxOutputs) and out.aux[0].shape == (2, 3)


def test_cifar_stem_keeps_resolution():
    model = create_model("googlenet", stem="cifar", num_classes=10).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 8, 8)
    std = create_model("googlenet", num_classes=10).eval()
    with torch.no_grad():
        assert std.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 1, 1)
    assert model.data_config.input_size == (3, 32, 32)
    with pytest.raises(ValueError, match="stem"):
        create_model("googlenet", stem="tiny")


def test_models_train_step_updates_weights():
    model = create_model("googlenet_cifar", num_classes=10, aux_logits=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    before = model.conv1.conv.weight.detach().clone()
    out = model(x)
    loss = nn.functional.cross_entropy(out.logits, y) + 0.3 * sum(nn.functional.cross_entropy(a, y) for a in out.aux)
    loss.backward()
    assert model.aux1.fc2.weight.grad is not None
    opt.step()
    assert not torch.equal(before, model.conv1.conv.weight)


def test_unknown_model_and_option_errors():
    with pytest.raises(UserError, match="did you mean 'googlenet'"):
        create_model("googlnet")
    with pytest.raises(UserError, match="no option 'aux_logit'.*aux_logits"):
        create_model("googlenet", aux_logit=True)


def test_summary_shapes():
    rows = model_summary("inception_v4")
    names = [r[0] for r in rows]
    assert names[0] == "features.0" and "last_linear" in names
    shapes = dict((r[0], r[2]) for r in rows)
    assert shapes["features.21"] == (1, 1536, 8, 8)
    aux_rows = {r[0]: r for r in model_summary("googlenet", aux_logits=True)}
    assert aux_rows["aux1"][2] is None and aux_rows["aux1"][3] > 0


@pytest.mark.parametrize("name,sizes", [("googlenet", [15, 16, 17, 33, 64]), ("googlenet_cifar", [2, 7, 32]),
                                        ("inception_v3", [75, 80])])
def test_aa_pool_keeps_weights_and_feature_sizes(name, sizes):
    """Anti-aliased pooling adds no parameters or state: plain weights load into it as they are,
    and every feature map keeps its size (so every input the plain model takes still works)."""
    torch.manual_seed(0)
    plain = create_model(name, num_classes=3).eval()
    aa = create_model(name, num_classes=3, aa_pool=True).eval()
    assert sum(isinstance(m, BlurMaxPool2d) for m in aa.modules()) == {"googlenet": 4, "googlenet_cifar": 2,
                                                                       "inception_v3": 4}[name]
    sd = plain.state_dict()
    assert {k: v.shape for k, v in aa.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    aa.load_state_dict(sd, strict=True)
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            a, b = plain.forward_features(x), aa.forward_features(x)
        assert a.shape == b.shape, size
        assert not torch.allclose(a, b)


@pytest.mark.parametrize("name,size,plain_map", [("googlenet", 128, 4), ("googlenet", 64, 2),
                                                 ("googlenet_cifar", 32, 8)])
def test_googlenet_without_maxpool4_keeps_weights_and_doubles_block5(name, size, plain_map):
    """maxpool4=False: the same state dict (loads either way), blocks 4a-4e compute the same
    thing, block 5 and the last feature map run at twice the resolution, and block 5's four
    times the pixels show in the MACs (+23% for the whole network at 224 px)."""
    torch.manual_seed(0)
    plain = create_model(name, num_classes=3).eval()
    wide = create_model(name, num_classes=3, maxpool4=False).eval()
    assert isinstance(wide.maxpool4, nn.Identity) and not isinstance(plain.maxpool4, nn.Identity)
    sd = plain.state_dict()
    assert {k: v.shape for k, v in wide.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    wide.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, size, size)
    block4e_out = []  # what block 5 sees: block 4e's output, pooled or not
    hook = plain.inception4e.register_forward_hook(lambda _m, _i, out: block4e_out.append(out))
    with torch.no_grad():
        a, b = plain.forward_features(x), wide.forward_features(x)
        hook.remove()
        assert a.shape == (2, 1024, plain_map, plain_map) and b.shape == (2, 1024, 2 * plain_map, 2 * plain_map)
        torch.testing.assert_close(b, wide.inception5b(wide.inception5a(block4e_out[0])))
        assert wide(x).shape == (2, 3)
    if name == "googlenet":
        assert 1.20 < count_macs(wide, (3, 224, 224)) / count_macs(plain, (3, 224, 224)) < 1.26


@pytest.mark.parametrize("kernel,ceil_mode", [(3, True), (2, True), (3, False)])
def test_blur_max_pool_sizes_constants_and_shift_stability(kernel, ceil_mode):
    pool = BlurMaxPool2d(kernel, ceil_mode=ceil_mode)
    plain = nn.MaxPool2d(kernel, stride=2, ceil_mode=ceil_mode)
    for size in range(kernel, 20):
        x = torch.randn(2, 3, size, size + 1)
        assert pool(x).shape == plain(x).shape, size
    assert torch.allclose(pool(torch.full((1, 2, 9, 9), 0.7)), torch.tensor(0.7))   # the blur sums to one
    # Aliasing, the thing the blur removes: shifted by one input pixel (half an output pixel), the pooled map
    # should lie halfway between the maps of the unshifted and the two-pixel-shifted input. Its distance from
    # there (relative to its spread, away from the borders, on random images) is about half plain pooling's.
    torch.manual_seed(0)
    x = torch.randn(16, 4, 34, 36)

    def aliasing(p):
        a, b, c = p(x[..., 2:]), p(x[..., 1:-1]), p(x[..., :-2])
        return float((b - (a + c) / 2)[..., 2:-2, 2:-2].abs().mean() / b.std())

    assert aliasing(pool) < 0.65 * aliasing(plain), (aliasing(pool), aliasing(plain))
