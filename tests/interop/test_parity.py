"""Proof against the real frameworks (``make test-interop``): MindSpore and PaddleClas build
each vendor model with random weights and randomised BatchNorm statistics, save it with their
own save function, and ``inception`` reads the file to the same eval-mode logits.

For each of the four models: the vendor's logits on the same random inputs against ours (max
abs difference below 1e-4 of the largest |logit|, identical top-1). MindSpore's InceptionV4
ends in a log-softmax: it is compared with ``log_softmax`` of our logits. PaddleClas's
GoogLeNet returns its two auxiliary heads' outputs beside the main one in eval mode: they are
compared with our ``aux1`` / ``aux2`` on the maps ``features_with_aux_inputs`` gives.

Skipped where MindSpore / Paddle are not installed (the main environment); ``make
test-interop`` installs them in ``.venv-interop``. The measured differences are printed in
the session summary (conftest.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inception.cli import main
from inception.engine.evaluate import restore_model
from inception.models import create_model, load_pretrained

from .conftest import RESULTS

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")   # paddle's, at import

NUM_CLASSES = 10
REL_TOL = 1e-4


# ---------------------------------------------------------------------------------------------
# Frameworks


def framework(name: str):
    """Import a framework, or skip where it is not installed; under ``make test-interop``
    (``INCEPTION_INTEROP=1``) a failed import is an error, never a silent skip."""
    if os.environ.get("INCEPTION_INTEROP"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


@pytest.fixture(scope="module")
def ms():
    mindspore = framework("mindspore")
    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
    mindspore.set_device("CPU")
    return mindspore


@pytest.fixture(scope="module")
def ms_nets(ms):
    from . import mindspore_nets
    return mindspore_nets


@pytest.fixture(scope="module")
def paddle():
    pd = framework("paddle")
    # paddleclas is only looked for here, not imported: see paddleclas_module
    if "paddleclas" not in sys.modules and importlib.util.find_spec("paddleclas") is None:
        if os.environ.get("INCEPTION_INTEROP"):
            raise ImportError("paddleclas is not installed")
        pytest.skip("paddleclas is not installed")
    pd.set_device("cpu")
    return pd


def paddleclas_module(name: str):
    """``paddleclas.ppcls.arch.backbone.model_zoo.<name>``, the PaddleClas package's own
    model file, imported without running the package's ``__init__`` modules: those import the
    whole of PaddleClas (its predictor, data pipeline and retrieval need opencv, faiss,
    visualdl...), which ``make test-interop`` leaves out (paddleclas is installed
    ``--no-deps``); the backbones need only paddle (and ``requests`` for their downloader)."""
    if "paddleclas" not in sys.modules:
        root = Path(importlib.util.find_spec("paddleclas").submodule_search_locations[0])
        for pkg in ("paddleclas", "paddleclas.ppcls", "paddleclas.ppcls.arch", "paddleclas.ppcls.arch.backbone",
                    "paddleclas.ppcls.arch.backbone.model_zoo", "paddleclas.ppcls.utils"):
            module = types.ModuleType(pkg)
            module.__path__ = [str(root.joinpath(*pkg.split(".")[1:]))]
            sys.modules[pkg] = module
    return importlib.import_module(f"paddleclas.ppcls.arch.backbone.model_zoo.{name}")


# ---------------------------------------------------------------------------------------------
# Random weights, set in the vendor framework


def random_value(name: str, shape: tuple[int, ...], rng: np.random.Generator, linear_in_out: bool = False
                 ) -> np.ndarray:
    """BatchNorm: mean ~ N(0, 0.1), variance ~ U(0.5, 1.5), scale ~ U(0.5, 1.5), shift ~
    N(0, 0.1); weights He-normal (fan-in; ``linear_in_out``: a Linear weight is stored (in,
    out), as Paddle's), biases N(0, 0.1)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("moving_mean", "_mean"):
        a = rng.normal(0.0, 0.1, shape)
    elif leaf in ("moving_variance", "_variance"):
        a = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1 and leaf in ("gamma", "weight"):
        a = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1:                                    # beta, bias
        a = rng.normal(0.0, 0.1, shape)
    else:
        fan_in = shape[0] if len(shape) == 2 and linear_in_out else int(np.prod(shape[1:]))
        a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    return a.astype(np.float32)


def randomize_mindspore(ms, net, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        p.set_data(ms.Tensor(random_value(p.name, tuple(p.shape), rng)))


def randomize_paddle(layer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    state = layer.state_dict()
    new = {k: random_value(k, tuple(v.shape), rng, linear_in_out=True) for k, v in state.items()}
    missing, unexpected = layer.set_state_dict(new)
    assert not missing and not unexpected


# ---------------------------------------------------------------------------------------------
# Comparison


def compare(label: str, theirs: np.ndarray, ours: torch.Tensor) -> float:
    ours = ours.detach().numpy()
    assert theirs.shape == ours.shape, label
    diff = float(np.abs(theirs - ours).max())
    scale = float(np.abs(theirs).max())
    RESULTS.append((label, diff, scale))
    assert diff < REL_TOL * scale, f"{label}: max abs difference {diff:.3g} for logits up to {scale:.3g}"
    assert (theirs.argmax(1) == ours.argmax(1)).all(), f"{label}: top-1 differs"
    return diff


def inputs(batch: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# MindSpore


def mindspore_training_state(ms, net):
    """The network inside a train cell with a Momentum optimizer, as the zoo's
    ModelCheckpoint saves it: the weights plus ``moments.*``, ``learning_rate``..."""
    loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = ms.nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    return ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, loss), opt)


def test_mindspore_googlenet(ms, ms_nets, tmp_path):
    net = ms_nets.GoogleNet(num_classes=NUM_CLASSES)
    randomize_mindspore(ms, net, seed=1)
    net.set_train(False)
    x = inputs(2, 224, seed=2)
    x_odd = inputs(1, 231, seed=9)        # other "same" paddings: the 2x2 pool before block 5 pads too
    theirs, theirs_odd = (net(ms.Tensor(a)).asnumpy() for a in (x, x_odd))

    ckpt, st = tmp_path / "googlenet.ckpt", tmp_path / "googlenet.safetensors"
    ms.save_checkpoint(mindspore_training_state(ms, net), str(ckpt), append_dict={"epoch_num": 3, "step_num": 30})
    ms.save_checkpoint(net, str(st), format="safetensors")
    for path in (ckpt, st):
        ours = create_model("googlenet", num_classes=NUM_CLASSES, variant="mindspore").eval()
        load_pretrained(ours, path)
        with torch.no_grad():
            compare(f"MindSpore GoogLeNet ({path.suffix})", theirs, ours(torch.from_numpy(x)))
    with torch.no_grad():
        compare("MindSpore GoogLeNet (.ckpt, 231x231 input)", theirs_odd, ours(torch.from_numpy(x_odd)))

    # a bfloat16 network: MindSpore writes BFloat16 records; the reference runs the same rounded weights in float32
    for p in net.get_parameters():
        p.set_dtype(ms.bfloat16)
    bf16 = tmp_path / "googlenet-bf16.ckpt"
    ms.save_checkpoint(net, str(bf16))
    for p in net.get_parameters():
        p.set_dtype(ms.float32)
    ours = create_model("googlenet", num_classes=NUM_CLASSES, variant="mindspore").eval()
    load_pretrained(ours, bf16)
    with torch.no_grad():
        compare("MindSpore GoogLeNet (.ckpt, bfloat16)", net(ms.Tensor(x)).asnumpy(), ours(torch.from_numpy(x)))

    # inception convert, then the checkpoint as eval / export restore it
    assert main(["convert", str(ckpt), str(tmp_path / "googlenet.pt")]) == 0
    model, saved, _, _, _ = restore_model(tmp_path / "googlenet.pt")
    assert saved["arch"] == "googlenet" and model.variant == "mindspore"
    with torch.no_grad():
        compare("MindSpore GoogLeNet (.ckpt -> convert -> restore_model)", theirs, model(torch.from_numpy(x)))


def train_like_the_zoo(ms, net, directory: Path) -> Path:
    """One training step as the zoo's InceptionV4 ``train.py`` runs it (``Model`` with
    RMSProp over its parameter groups, a fixed loss scale, ``ModelCheckpoint``) on two random
    75-pixel images: the checkpoint it writes, with the optimizer's ``mean_square.*`` /
    ``moment.*`` slots beside the weights."""
    import mindspore.dataset as ds

    no_decay = ("beta", "gamma", "bias")
    params = net.trainable_params()
    groups = [{"params": [p for p in params if not any(k in p.name for k in no_decay)], "weight_decay": 4e-5},
              {"params": [p for p in params if any(k in p.name for k in no_decay)]}, {"order_params": params}]
    opt = ms.nn.RMSProp(groups, learning_rate=1e-5, decay=0.9, epsilon=1.0, weight_decay=4e-5, momentum=0.9,
                        loss_scale=1024.0)
    loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    model = ms.Model(net, loss_fn=loss, optimizer=opt, amp_level="O0",
                     loss_scale_manager=ms.FixedLossScaleManager(1024.0, drop_overflow_update=False))
    data = ds.NumpySlicesDataset({"image": inputs(2, 75, seed=10), "label": np.array([1, 2], np.int32)},
                                 shuffle=False).batch(2)
    checkpoints = ms.train.ModelCheckpoint(prefix="inceptionV4-train", directory=str(directory),
                                           config=ms.train.CheckpointConfig(save_checkpoint_steps=1))
    model.train(1, data, callbacks=[checkpoints], dataset_sink_mode=False)
    (path,) = directory.glob("*.ckpt")
    return path


def test_mindspore_inception_v4(ms, ms_nets, tmp_path):
    net = ms_nets.Inceptionv4(classes=NUM_CLASSES)
    randomize_mindspore(ms, net, seed=3)
    ckpt = train_like_the_zoo(ms, net, tmp_path / "ckpts")
    net.set_train(False)
    x = inputs(1, 299, seed=4)
    theirs = net(ms.Tensor(x)).asnumpy()                    # log-probabilities
    ours = create_model("inception_v4", num_classes=NUM_CLASSES, variant="mindspore").eval()
    load_pretrained(ours, ckpt)
    with torch.no_grad():
        compare("MindSpore InceptionV4 (ModelCheckpoint .ckpt, log-softmax)", theirs,
                F.log_softmax(ours(torch.from_numpy(x)), 1))


# ---------------------------------------------------------------------------------------------
# PaddleClas


def test_paddleclas_googlenet(paddle, tmp_path):
    layer = paddleclas_module("googlenet").GoogLeNet(class_num=NUM_CLASSES)
    randomize_paddle(layer, seed=5)
    layer.eval()
    x = inputs(2, 224, seed=6)
    out, out1, out2 = (t.numpy() for t in layer(paddle.to_tensor(x)))

    path = tmp_path / "GoogLeNet.pdparams"
    paddle.save(layer.state_dict(), str(path))
    ours = create_model("googlenet_v1", num_classes=NUM_CLASSES).eval()
    load_pretrained(ours, path)
    with torch.no_grad():
        t = torch.from_numpy(x)
        compare("PaddleClas GoogLeNet (.pdparams)", out, ours(t))
        _, a, d = ours.features_with_aux_inputs(t)
        compare("PaddleClas GoogLeNet aux 1 (.pdparams)", out1, ours.aux1(a))
        compare("PaddleClas GoogLeNet aux 2 (.pdparams)", out2, ours.aux2(d))

    # a bfloat16 network: Paddle saves uint16 bit patterns; the reference runs the same rounded weights in float32
    layer.to(dtype="bfloat16")
    bf16 = tmp_path / "GoogLeNet-bf16.pdparams"
    paddle.save(layer.state_dict(), str(bf16))
    layer.to(dtype="float32")
    ours = create_model("googlenet_v1", num_classes=NUM_CLASSES).eval()
    load_pretrained(ours, bf16)
    with torch.no_grad():
        compare("PaddleClas GoogLeNet (.pdparams, bfloat16)", layer(paddle.to_tensor(x))[0].numpy(),
                ours(torch.from_numpy(x)))


def test_paddleclas_inception_v4(paddle, tmp_path):
    layer = paddleclas_module("inception_v4").InceptionV4(class_num=NUM_CLASSES)
    randomize_paddle(layer, seed=7)
    layer.eval()
    x = inputs(1, 299, seed=8)
    theirs = layer(paddle.to_tensor(x)).numpy()

    path = tmp_path / "InceptionV4.pdparams"
    paddle.save(layer.state_dict(), str(path))
    ours = create_model("inception_v4", num_classes=NUM_CLASSES, variant="paddleclas").eval()
    load_pretrained(ours, path)
    with torch.no_grad():
        compare("PaddleClas InceptionV4 (.pdparams)", theirs, ours(torch.from_numpy(x)))

    assert main(["convert", str(path), str(tmp_path / "inception_v4.pt")]) == 0
    model, saved, _, _, _ = restore_model(tmp_path / "inception_v4.pt")
    assert saved["arch"] == "inception_v4" and model.variant == "paddleclas"
    with torch.no_grad():
        compare("PaddleClas InceptionV4 (.pdparams -> convert -> restore_model)", theirs,
                model(torch.from_numpy(x)))
