"""A tiny served model (googlenet, 3 classes, 32x32, exported to ONNX) and a few images, made
once per session; helpers shared by the serving tests."""

import asyncio
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inception.infer import Predictor

from ..conftest import make_checkpoint

CLASSES = ["cat", "dog", "fox"]


def _images(root: Path, n: int = 8, seed: int = 0) -> list[Path]:
    """Noisy flat-colour images of different sizes and formats (JPEG, PNG, a grayscale one)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = 40 + 4 * i, 48 + 2 * i
        pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        if i == 3:
            image, suffix = image.convert("L"), ".png"
        else:
            suffix = ".png" if i % 3 == 2 else ".jpg"
        path = root / f"img{i}{suffix}"
        image.save(path, **({"quality": 90} if suffix == ".jpg" else {}))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """``{"checkpoint", "onnx", "images", "folder"}``: the model's logits are scaled and centred
    on these images, so that their probabilities differ and are not saturated (a test that
    mixed images up, or ran a different preprocessing, would see it)."""
    from inception.export import export_checkpoint
    from inception.infer import preprocess_transform

    root = tmp_path_factory.mktemp("served")
    ckpt, model = make_checkpoint(root / "model.pt", size=32, classes=CLASSES, seed=3)
    images = _images(root / "images")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    tf = preprocess_transform({"image_size": 32, "crop_pct": 0.875})
    with torch.no_grad():
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        centred = (features - features.mean(0)) @ model.fc.weight.T
        scale = 2.0 / float(centred.std())
        model.fc.weight.mul_(scale)
        model.fc.bias.copy_(-(features.mean(0) @ model.fc.weight.T))
    state["model"] = model.state_dict()
    torch.save(state, ckpt)
    onnx_path = export_checkpoint(ckpt, output=root / "model.onnx").path
    return {"checkpoint": ckpt, "onnx": onnx_path, "images": images, "folder": root / "images"}


class RecordingPredictor(Predictor):
    """Wraps a predictor and records the batch size of every call after ``start()``; with
    ``fail``, raises instead."""

    def __init__(self, inner: Predictor) -> None:
        super().__init__(inner.path, inner.metadata, inner.device, inner.fixed_batch)
        self.inner = inner
        self.runtime = inner.runtime
        self.calls: list[int] | None = None
        self.fail = False

    def start(self) -> None:
        self.calls = []

    def __call__(self, batch):
        if self.calls is not None:
            self.calls.append(int(batch.shape[0]))
        if self.fail:
            raise RuntimeError("simulated model failure")
        return self.inner(batch)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that claims ``width x height`` RGB pixels and holds a few rows: a
    decompression bomb's header, a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 2, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def run_concurrently(app, requests: list[dict]) -> list:
    """Send ``requests`` (kwargs of ``httpx.AsyncClient.request``) to ``app`` all at once,
    inside its lifespan; the responses, in order."""
    import httpx

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(*(client.request(**r) for r in requests))

    return asyncio.run(go())
