"""The fast pipeline: fused decode + crop, its statistics against torchvision, odd files,
device-side normalization."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.transforms import v2

from inception.data.decode import (
    CenterCropDecode,
    EncodedImage,
    RandomResizedCropDecode,
    jpeg_size,
    read_encoded,
    rrc_params,
)
from inception.data.folder import ImageReadError, load_image
from inception.data.loader import FileLoader
from inception.data.transforms import eval_transform, train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like image (gradients and blobs: resampling differences stay small)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [np.sin(2 * math.pi * (f1 * x + f2 * y) + p) for f1, f2, p in rng.uniform(0.5, 3, (3, 3))]
    return ((np.stack(chans, -1) * 0.5 + 0.5) * 255).astype(np.uint8)


def _jpeg(w=120, h=90, mode="RGB", seed=0, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(_photo(w, h, seed)).convert(mode).save(out, "JPEG", quality=95, **save)
    return out.getvalue()


def _enc(data: bytes, name="x.jpg") -> EncodedImage:
    return EncodedImage(bytearray(data), name)


def _pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_shapes_dtypes_and_ranges():
    data = _jpeg(130, 100)
    for decoder in (RandomResizedCropDecode(48), CenterCropDecode(48, crop_pct=0.875)):
        x = decoder(_enc(data))
        assert x.shape == (3, 48, 48) and x.dtype == torch.uint8 and 0 <= x.min() < x.max() <= 255
    batch = torch.stack([RandomResizedCropDecode(48)(_enc(data)) for _ in range(4)])
    out = FileLoader(None, "cpu", (MEAN, STD)).prepare(batch)
    want = v2.Normalize(MEAN, STD)(batch.float() / 255)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    cl = FileLoader(None, "cpu", (MEAN, STD), channels_last=True).prepare(batch)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, want, atol=1e-5, rtol=1e-5)


def test_crop_params_equal_torchvision_for_the_same_seed():
    log_ratio = tuple(torch.log(torch.tensor((3 / 4, 4 / 3))).tolist())
    for seed in range(500):
        w, h = [(426, 320), (320, 426), (40, 400), (900, 20), (64, 64)][seed % 5]
        torch.manual_seed(seed)
        want = T.RandomResizedCrop.get_params(torch.zeros(1, h, w), (0.08, 1.0), (3 / 4, 4 / 3))
        torch.manual_seed(seed)
        assert rrc_params(w, h, (0.08, 1.0), log_ratio) == want


@pytest.mark.parametrize("w,h,size", [(120, 90, 40), (800, 600, 32)])   # the second takes the DCT-scaled decode
def test_train_output_matches_the_torchvision_preset(w, h, size):
    """Same seed: the same crop and flip as torchvision's RandomResizedCrop + flip; pixels
    equal (full decode) or close (a 1/2..1/8 scaled decode)."""
    data = _jpeg(w, h)
    ours = RandomResizedCropDecode(size)
    ref = train_transform(preset="imagenet", size=size, mean=(0, 0, 0), std=(1, 1, 1))
    exact, scaled = [], []
    for seed in range(40):
        torch.manual_seed(seed)
        a = ours(_enc(data)).float() / 255
        torch.manual_seed(seed)
        b = ref(_pil(data))
        full_decode = min(ours.last_box[2:]) < 2 * size
        (exact if full_decode else scaled).append((a - b).abs().mean().item())
    assert max(exact, default=0) < 1e-6 and len(exact) + len(scaled) == 40
    if w > 400:
        assert len(scaled) > 10 and np.mean(scaled) < 0.02 and max(scaled) < 0.05


def test_eval_output_matches_the_torchvision_preset():
    for w, h in [(120, 90), (90, 120), (640, 480)]:
        data = _jpeg(w, h)
        a = CenterCropDecode(64, crop_pct=0.875)(_enc(data)).float() / 255
        b = eval_transform(size=64, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.875)(_pil(data))
        assert (a - b).abs().mean() < 0.02, (w, h)


def test_crop_scale_and_aspect_distributions_match_random_resized_crop():
    """The boxes actually decoded (through the DCT-scaled path too) against torchvision v2's
    RandomResizedCrop drawn with other seeds: two-sample KS tests on area fraction and
    log aspect ratio, plus the flip rate."""
    big, small = _jpeg(800, 600, seed=1), _jpeg(200, 150, seed=2)
    ours = RandomResizedCropDecode(24)
    torch.manual_seed(123)
    scales, logr, flips = [], [], 0
    for i in range(1500):
        data, (w, h) = (big, (800, 600)) if i % 2 else (small, (200, 150))
        ours(_enc(data))
        top, left, bh, bw = ours.last_box
        scales.append(bh * bw / (w * h))
        logr.append(math.log(bw / bh))
    torch.manual_seed(456)
    ref_scales, ref_logr = [], []
    rrc = v2.RandomResizedCrop(24)
    for i in range(1500):
        w, h = (800, 600) if i % 2 else (200, 150)
        p = rrc.make_params([torch.zeros(3, h, w)])
        ref_scales.append(p["height"] * p["width"] / (w * h))
        ref_logr.append(math.log(p["width"] / p["height"]))
    assert stats.ks_2samp(scales, ref_scales).pvalue > 0.01
    assert stats.ks_2samp(logr, ref_logr).pvalue > 0.01
    assert 0.08 * 0.95 <= min(scales) and max(scales) <= 1.0
    # flips: half of them, each mirroring the unflipped crop
    data = _jpeg(60, 50)
    torch.manual_seed(7)
    for _ in range(200):
        state = torch.get_rng_state()
        x = ours(_enc(data))
        torch.set_rng_state(state)
        plain = RandomResizedCropDecode(24, hflip=False)(_enc(data))
        flips += int(not torch.equal(x, plain))
        if not torch.equal(x, plain):
            assert torch.equal(x, plain.flip(-1))
    assert 70 <= flips <= 130


def test_odd_images(tmp_path):
    """Grayscale, CMYK, progressive and EXIF JPEGs, 16-bit and palette PNGs, a PNG named
    .jpg: all decode to RGB; corrupt, empty, non-image and oversized files fail with one
    line naming the file."""
    rgb = Image.fromarray(_photo(80, 60))
    files = {
        "gray.jpg": _jpeg(80, 60, "L"), "cmyk.jpg": _jpeg(80, 60, "CMYK"),
        "progressive.jpg": _jpeg(80, 60, progressive=True), "exif.jpg": _jpeg(80, 60, exif=b"Exif\0\0"),
    }
    for name, image in {"16bit.png": Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257)),
                        "palette.png": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
                        "png-named.jpg": rgb}.items():
        out = io.BytesIO()
        image.save(out, "PNG", **({"transparency": 0} if name == "palette.png" else {}))
        files[name] = out.getvalue()
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        for decoder in (RandomResizedCropDecode(32), CenterCropDecode(32)):
            x = decoder(read_encoded(path))
            assert x.shape == (3, 32, 32) and x.dtype == torch.uint8, name
        # the whole image agrees with the PIL path the torchvision pipeline uses
        full = CenterCropDecode(60, resize_size=60)(read_encoded(path)).float()
        ref = torch.from_numpy(np.array(load_image(path).resize((80, 60)))).permute(2, 0, 1)[:, :, 10:70].float()
        assert (full - ref).abs().mean() < 12, name
    good = _jpeg()
    bad = {"truncated.jpg": good[: len(good) // 2], "empty.jpg": b"", "text.jpg": b"not an image at all",
           "garbage.jpg": b"\xff\xd8" + bytes(range(256)) * 4}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError, match=f"cannot read image '.*{name}'"):
            RandomResizedCropDecode(32)(read_encoded(tmp_path / name))
    with pytest.raises(ImageReadError, match="missing.jpg"):
        read_encoded(tmp_path / "missing.jpg")


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for data in (_jpeg(120, 90), _png(120, 90)):
        with pytest.raises(ImageReadError, match="decompression bomb"):
            CenterCropDecode(16)(_enc(data))


def _png(w, h) -> bytes:
    out = io.BytesIO()
    Image.fromarray(_photo(w, h)).save(out, "PNG")
    return out.getvalue()


def test_jpeg_size_reads_the_header():
    assert jpeg_size(_jpeg(123, 45)) == (123, 45)
    assert jpeg_size(_jpeg(50, 70, progressive=True)) == (50, 70)
    assert jpeg_size(_png(10, 10)) is None and jpeg_size(b"") is None and jpeg_size(b"\xff\xd8\xff") is None


def test_file_loader_wraps_a_dataloader():
    data = [(torch.full((3, 4, 4), i, dtype=torch.uint8), i) for i in range(6)]
    loader = FileLoader(DataLoader(data, batch_size=4), "cpu", ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert len(loader) == 2 and loader.batch_size == 4
    x, y, skipped = next(iter(loader))
    assert skipped == []
    assert x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(x[3, 0, 0, 0], torch.tensor((3 / 255 - 0.5) / 0.25))


# --------------------------------------------------------------------------------------
# data.gpu_decode: the batched decode on the device (run here on the CPU; -m gpu on CUDA)

def _deferred_batch(files: dict, seed: int = 0, size: int = 32):
    from inception.data.decode import collate_images

    ours, plain = RandomResizedCropDecode(size, defer=True), RandomResizedCropDecode(size)
    items, want = [], []
    for k, data in enumerate(files.values()):
        torch.manual_seed(seed + k)
        items.append((ours(_enc(data, f"f{k}.jpg")), k))
        torch.manual_seed(seed + k)
        try:
            image = plain(_enc(data, f"f{k}.jpg"))
            want.append((image, min(plain.last_box[2:]) < 2 * size))   # False: the worker's DCT-scaled decode
        except ImageReadError:
            want.append((None, False))
    return collate_images(items), want


def test_deferred_decode_equals_the_worker_decode():
    """Same seeds: the device decode of a batch (JPEGs deferred, a PNG and a CMYK JPEG
    decoded by the workers) gives exactly the worker pipeline's pixels."""
    from inception.data.decode import Deferred, DeferredBatch

    files = {"a": _jpeg(120, 90, seed=1), "b": _jpeg(90, 120, "L", seed=2), "c": _png(64, 64),
             "d": _jpeg(70, 50, "CMYK"), "e": _jpeg(640, 480, seed=3), "f": _jpeg(80, 60, progressive=True)}
    (batch, labels), want = _deferred_batch(files)
    assert isinstance(batch, DeferredBatch) and labels.tolist() == list(range(6))
    kinds = [isinstance(item, Deferred) for item in batch.items]
    assert kinds == [True, True, False, False, True, True]
    assert batch.shape == (6, 3, 32, 32)
    images, failed = batch.decode(torch.device("cpu"))
    assert not failed and images.dtype == torch.uint8
    assert not all(full for _, full in want)
    for got, (ref, full), k in zip(images, want, "abcdef"):
        if full or k in "cd":
            assert torch.equal(got, ref), k
        else:     # the worker decoded at 1/2..1/8 scale (DCT scaling): close, not equal
            assert (got.float() - ref.float()).abs().mean() < 8, k


def test_deferred_decode_skips_or_names_a_corrupt_jpeg():
    from inception.data.sampling import Skipped

    good = _jpeg(60, 50)
    files = {"ok": good, "bad": good[: len(good) // 2], "ok2": _jpeg(50, 60, seed=4)}
    (batch, labels), _ = _deferred_batch(files)
    images, failed = batch.decode(torch.device("cpu"))
    assert images.shape[0] == 2 and [(i, name) for i, name, _ in failed] == [(1, "f1.jpg")]
    assert "cannot read image 'f1.jpg'" in failed[0][2]

    class OneBatch:
        def __init__(self, b):
            self.b = b

        def __iter__(self):
            yield self.b

        def __len__(self):
            return 1
    x, y, skipped = next(iter(FileLoader(OneBatch((batch, labels, [])), "cpu", (MEAN, STD))))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 2]
    assert len(skipped) == 1 and isinstance(skipped[0], Skipped) and skipped[0].path == "f1.jpg"
    with pytest.raises(ImageReadError, match="f1.jpg.*data.bad_image: skip"):
        next(iter(FileLoader(OneBatch((batch, labels, [])), "cpu", (MEAN, STD), bad_image="error")))
    with pytest.raises(ImageReadError, match="f1.jpg"):
        next(iter(FileLoader(OneBatch((batch, labels)), "cpu", (MEAN, STD))))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decode_matches_the_cpu_decode():
    files = {k: _jpeg(320 + 10 * k, 240, seed=k) for k in range(8)}
    (batch, _), want = _deferred_batch(files, size=64)
    images, failed = batch.decode(torch.device("cuda"))
    assert not failed and images.is_cuda and images.shape == (8, 3, 64, 64)
    for got, (ref, _) in zip(images.cpu(), want):     # nvJPEG and a float resize: close to libjpeg-turbo's
        assert (got.float() - ref.float()).abs().mean() < 3
