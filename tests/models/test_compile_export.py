"""Every model traces under torch.compile and exports to ONNX at a small input size."""

import pytest
import torch

from inception.models import create_model

from ..conftest import SMALL_SIZE

ALL = list(SMALL_SIZE)


def _close(got: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    scale = expected.abs().max().item() + 1e-6
    assert (got - expected).abs().max().item() <= rel * scale


@pytest.mark.parametrize("name", ALL)
def test_torch_compile_graph_capture(name):
    """Dynamo + AOTAutograd (the parts that break on model code) with fullgraph=True; the
    aux-head models also backward through the compiled train graph. The inductor code
    generator is covered by the slow test below."""
    torch._dynamo.reset()
    size = SMALL_SIZE[name]
    kwargs = {"aux_logits": True} if name.startswith("googlenet") else {}
    model = create_model(name, num_classes=5, **kwargs).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        _close(compiled(x), model(x), 1e-5)
    if not kwargs:
        return
    model.train()
    out = compiled(x)
    logits = out.logits if kwargs else out
    (logits.sum() + sum(a.sum() for a in getattr(out, "aux", ()))).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_torch_compile_inductor(name):
    torch._dynamo.reset()
    size = SMALL_SIZE[name]
    model = create_model(name, num_classes=5).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        _close(compiled(x), model(x), 1e-4)


@pytest.mark.slow      # 40 s for the six: test_export.py's round trip runs every model in ONNX Runtime too
@pytest.mark.parametrize("name", ALL)
def test_onnx_export_runs_in_onnxruntime(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    size = SMALL_SIZE[name]
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, size, size)
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    path = tmp_path / f"{name}.onnx"
    program.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    _close(torch.from_numpy(got), expected, 1e-4)
    assert (torch.from_numpy(got).argmax(1) == expected.argmax(1)).all()
