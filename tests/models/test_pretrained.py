"""Weights interoperability: torchvision / timm state dicts, our checkpoints, safe loading."""

import logging
import os
import pickle

import pytest
import torch

from inception.errors import CheckpointError
from inception.models import create_model, get_card, load_pretrained
from inception.models.layers import IMAGENET_MEAN, IMAGENET_STD
from inception.models.pretrained import CHECKPOINT_FORMAT, read_weights

from ..conftest import randomize_batchnorm

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _tv(name, **kw):
    fn = getattr(torchvision.models, name)
    return fn(weights=None, init_weights=True, **kw)


REFERENCES = [
    ("googlenet", {}, lambda: _tv("googlenet", aux_logits=False), "torchvision", 64),
    ("googlenet", {"aux_logits": True}, lambda: _tv("googlenet", aux_logits=True), "torchvision", 64),
    ("inception_v3", {}, lambda: _tv("inception_v3", aux_logits=False), "torchvision/timm", 80),
    ("inception_v3", {"aux_logits": True}, lambda: _tv("inception_v3", aux_logits=True), "torchvision/timm", 80),
    ("inception_v3", {}, lambda: timm.create_model("inception_v3"), "torchvision/timm", 80),
    ("inception_v4", {}, lambda: timm.create_model("inception_v4"), "timm", 80),
    ("inception_resnet_v2", {}, lambda: timm.create_model("inception_resnet_v2"), "timm", 80),
]


@pytest.mark.parametrize("name,kwargs,make_ref,source,size", REFERENCES,
                         ids=[f"{r[0]}-{r[3]}-{'aux' if r[1] else 'noaux'}" for r in REFERENCES])
def test_reference_weights_give_identical_outputs(tmp_path, name, kwargs, make_ref, source, size):
    ref = make_ref()
    randomize_batchnorm(ref)
    ref.eval()
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)

    ours = create_model(name, **kwargs)
    card_dc = ours.data_config
    result = load_pretrained(ours, path)
    ours.eval()
    assert result.source == source and result.arch == name
    assert not result.reinitialized and not result.missing_aux
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert (got - expected).abs().max().item() < 1e-4
    # the weights' preprocessing comes with the result; the model's own stays its card's
    assert result.data_config.mean == (0.5, 0.5, 0.5) and result.data_config.std == (0.5, 0.5, 0.5)
    assert ours.data_config == card_dc == get_card(name).data_config_for(kwargs)


def test_torchvision_transform_input_is_matched_by_data_config(tmp_path):
    """torchvision's pretrained googlenet runs with transform_input=True on ImageNet-normalised
    input; ours, after loading, must give the same logits on input normalised by its data_config."""
    ref = _tv("googlenet", aux_logits=False, transform_input=True)
    randomize_batchnorm(ref)
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = create_model("googlenet")
    dc = load_pretrained(ours, tmp_path / "tv.pth").data_config
    ours.eval()
    raw = torch.rand(2, 3, 64, 64)

    def norm(x, mean, std):
        return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    with torch.no_grad():
        expected = ref(norm(raw, IMAGENET_MEAN, IMAGENET_STD))
        got = ours(norm(raw, dc.mean, dc.std))
    assert (got - expected).abs().max().item() < 1e-4


def test_safetensors_and_wrapped_prefixed_state_dicts(tmp_path):
    from safetensors.torch import save_file

    ref = timm.create_model("inception_v4", num_classes=10).eval()
    sd = ref.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "w.pth")
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        expected = ref(x)
    for f in ("w.safetensors", "w.pth"):
        ours = create_model("inception_v4", num_classes=10)
        load_pretrained(ours, tmp_path / f)
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x), expected, rtol=1e-4, atol=1e-4)


def test_cadene_head_name_is_accepted(tmp_path):
    sd = timm.create_model("inception_resnet_v2", num_classes=4).state_dict()
    sd = {k.replace("classif.", "last_linear."): v for k, v in sd.items()}
    torch.save(sd, tmp_path / "cadene.pth")
    ours = create_model("inception_resnet_v2", num_classes=4)
    load_pretrained(ours, tmp_path / "cadene.pth")
    torch.testing.assert_close(ours.classif.weight, sd["last_linear.weight"])


def test_classifier_with_other_class_count_is_reinitialised(tmp_path, caplog):
    ref = _tv("googlenet", aux_logits=True)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = create_model("googlenet", num_classes=5, aux_logits=True)
    fresh_fc = ours.fc.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="inception"):
        result = load_pretrained(ours, tmp_path / "tv.pth")
    assert "re-initialised" in caplog.text
    assert set(result.reinitialized) == {"fc.weight", "fc.bias", "aux1.fc2.weight", "aux1.fc2.bias",
                                         "aux2.fc2.weight", "aux2.fc2.bias"}
    torch.testing.assert_close(ours.fc.weight, fresh_fc)
    torch.testing.assert_close(ours.inception5b.branch1.conv.weight, ref.inception5b.branch1.conv.weight)
    torch.testing.assert_close(ours.aux1.fc1.weight, ref.aux1.fc1.weight)


def test_aux_weights_ignored_or_missing(tmp_path, caplog):
    torch.save(_tv("inception_v3", aux_logits=True).state_dict(), tmp_path / "aux.pth")
    torch.save(_tv("inception_v3", aux_logits=False).state_dict(), tmp_path / "noaux.pth")
    result = load_pretrained(create_model("inception_v3"), tmp_path / "aux.pth")
    assert result.ignored and all(k.startswith("AuxLogits.") for k in result.ignored)
    with caplog.at_level(logging.WARNING, logger="inception"):
        result = load_pretrained(create_model("inception_v3", aux_logits=True), tmp_path / "noaux.pth")
    assert result.missing_aux and "aux" in caplog.text


def test_wrong_architecture_is_one_clear_error(tmp_path):
    torch.save(timm.create_model("inception_v4").state_dict(), tmp_path / "v4.pth")
    with pytest.raises(CheckpointError, match=r"holds inception_v4 weights, not googlenet; use --model inception_v4"):
        load_pretrained(create_model("googlenet"), tmp_path / "v4.pth")


def test_missing_and_mismatched_keys_are_listed(tmp_path):
    sd = _tv("googlenet", aux_logits=False).state_dict()
    del sd["inception4a.branch1.conv.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as e:
        load_pretrained(create_model("googlenet"), tmp_path / "broken.pth")
    msg = str(e.value)
    assert "missing keys: inception4a.branch1.conv.weight" in msg and "unexpected keys: extra.weight" in msg
    assert "\n" not in msg
    # A stem of another shape (the CIFAR stem) is a shape mismatch, not a silent re-init.
    torch.save(create_model("googlenet").state_dict(), tmp_path / "std.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches: conv1.conv.weight"):
        load_pretrained(create_model("googlenet_cifar"), tmp_path / "std.pth")


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        read_weights(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_weights(tmp_path / "junk.safetensors")
    torch.save({"a": 1}, tmp_path / "nottensors.pth")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        read_weights(tmp_path / "nottensors.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "alien.pth")
    with pytest.raises(CheckpointError, match=r"is not a state dict of a known layout \(googlenet, googlenet_v1, "):
        load_pretrained(create_model("googlenet"), tmp_path / "alien.pth")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


def test_malicious_pickle_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil_p2.pth", "wb") as f:
        pickle.dump({"conv1.conv.weight": _Exploit()}, f, protocol=2)
    with open(tmp_path / "evil_p4.pth", "wb") as f:
        pickle.dump({"conv1.conv.weight": _Exploit()}, f, protocol=4)
    torch.save({"model": _Exploit()}, tmp_path / "evil_zip.pth")
    for f in ("evil_p2.pth", "evil_zip.pth"):
        with pytest.raises(CheckpointError, match="not loaded, for safety.*GLOBAL posix.system"):
            load_pretrained(create_model("googlenet"), tmp_path / f)
    with pytest.raises(CheckpointError):
        load_pretrained(create_model("googlenet"), tmp_path / "evil_p4.pth")
    assert not (tmp_path / "PWNED_MARKER").exists()
    # The same files do run code under a plain pickle load: the test's exploit is real.
    with open(tmp_path / "evil_p2.pth", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "PWNED_MARKER").exists()


def test_project_checkpoint_round_trip(tmp_path):
    src = create_model("googlenet_cifar", num_classes=3).eval()
    randomize_batchnorm(src)
    ckpt = {"format": CHECKPOINT_FORMAT, "arch": "googlenet_cifar", "model_class": "GoogLeNet",
            "model": src.state_dict(), "class_names": ["a", "b", "c"],
            "data_config": {"mean": [0.1, 0.2, 0.3], "std": [0.3, 0.3, 0.3]}}
    torch.save(ckpt, tmp_path / "ours.pt")
    dst = create_model("googlenet_cifar", num_classes=3)
    result = load_pretrained(dst, tmp_path / "ours.pt")
    assert result.source == "inception" and result.checkpoint["class_names"] == ["a", "b", "c"]
    assert result.data_config.mean == (0.1, 0.2, 0.3) and dst.data_config.mean == IMAGENET_MEAN
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src(x))
    with pytest.raises(CheckpointError, match="is for model 'googlenet_cifar', not 'inception_v4'"):
        load_pretrained(create_model("inception_v4"), tmp_path / "ours.pt")


def test_create_model_pretrained_argument(tmp_path):
    ref = timm.create_model("inception_v4", num_classes=2).eval()
    torch.save(ref.state_dict(), tmp_path / "v4.pth")
    ours = create_model("inception_v4", num_classes=2, pretrained=str(tmp_path / "v4.pth")).eval()
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch, variant", [("googlenet", "mindspore"), ("inception_v4", "paddleclas")])
def test_exported_safetensors_are_loaded_only_into_their_variant(tmp_path, arch, variant):
    """An exported file's header names the variant it was built as (same shapes as ours, other
    padding or branch order): loading it into another variant is refused with the fix, and
    the file's own mean/std come with it."""
    from inception.export import write_model
    from inception.metadata import model_metadata

    size = 75 if arch == "inception_v4" else 64
    torch.manual_seed(0)
    source = create_model(arch, num_classes=3, variant=variant)
    randomize_batchnorm(source)
    source.eval()
    meta = model_metadata(source, {"model_options": {"variant": variant}}, None, image_size=size)
    path = write_model(source, tmp_path / "m.safetensors", fmt="safetensors", metadata=meta, image_size=size)
    with pytest.raises(CheckpointError, match=f"--set model.options.variant={variant}"):
        load_pretrained(create_model(arch, num_classes=3), path)
    same = create_model(arch, num_classes=3, variant=variant).eval()
    loaded = load_pretrained(same, path)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(same(x), source(x))
    assert tuple(loaded.data_config.mean) == tuple(meta["mean"])
    # and a default-variant export refuses a vendor-variant model
    plain = create_model(arch, num_classes=3).eval()
    meta = model_metadata(plain, None, None, image_size=size)
    path = write_model(plain, tmp_path / "p.safetensors", fmt="safetensors", metadata=meta, image_size=size)
    with pytest.raises(CheckpointError, match="variant="):
        load_pretrained(create_model(arch, num_classes=3, variant=variant), path)
    load_pretrained(create_model(arch, num_classes=3), path)
