import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from inception.config import DataCfg
from inception.data import build_datasets, build_eval_dataset, load_image
from inception.data.cifar import CIFAR10_CLASSES
from inception.errors import UserError

from .conftest import IDENTITY, write_image

CIFAR_JPG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def _cfg(root, **kw):
    return DataCfg(dataset="folder", data_dir=str(root), **kw)


@pytest.fixture
def tree(tmp_path):
    """train/{cat,dog} in every image mode and format; val/cat only."""
    t = tmp_path / "train"
    write_image(t / "cat" / "rgb.jpg")
    write_image(t / "cat" / "gray.jpg", "L")
    write_image(t / "cat" / "cmyk.jpg", "CMYK")
    write_image(t / "cat" / "UPPER.JPG", size=(16, 24))
    write_image(t / "dog" / "rgba.png", "RGBA")
    write_image(t / "dog" / "palette.png", "P")
    write_image(t / "dog" / "sub" / "nested.bmp")
    (t / "dog" / "notes.txt").write_text("not an image, ignored by extension")
    (t / ".hidden").mkdir()
    write_image(tmp_path / "val" / "cat" / "v.webp", fmt="WEBP")
    return tmp_path


@pytest.mark.parametrize("pipeline,dtype", [("fast", torch.uint8), ("torchvision", torch.float32)])
def test_every_mode_loads_as_rgb(tree, identity_dc, pipeline, dtype):
    train, val = build_datasets(_cfg(tree, image_size=24, pipeline=pipeline), identity_dc)
    assert train.classes == val.classes == ["cat", "dog"]
    assert len(train) == 7 and len(val) == 1
    assert [y for _, y in train.samples] == [0, 0, 0, 0, 1, 1, 1]
    for i in range(len(train)):
        x, y = train[i]
        assert x.shape == (3, 24, 24) and x.dtype == dtype
    assert (train.normalize is not None) == (pipeline == "fast")
    assert val[0][0].shape == (3, 24, 24) and val[0][1] == 0
    for path, _ in train.samples:
        assert load_image(path).mode == "RGB"


def test_16_and_32_bit_grayscale_to_8_bit_in_integers():
    from inception.data.folder import _to_8bit

    def reference(a, mode):          # the float64 formula the integer path replaces
        a = a.astype(np.float64)
        top = 65535.0 if a.max() > 255 or mode.startswith("I;16") else 255.0
        return np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    np.testing.assert_array_equal(np.asarray(_to_8bit(Image.fromarray(every))), reference(every, "I;16"))
    small = np.arange(256, dtype=np.int32).reshape(16, 16)           # a 32-bit image of 8-bit values stays as is
    np.testing.assert_array_equal(np.asarray(_to_8bit(Image.fromarray(small))), small.astype(np.uint8))
    wide = np.array([[-5, 0, 300, 65535, 70000, 2**31 - 1]], dtype=np.int32)   # negatives 0, above 16 bits 255
    assert np.asarray(_to_8bit(Image.fromarray(wide))).tolist() == [[0, 0, 1, 255, 255, 255]]


def test_only_the_listed_formats_are_opened(tmp_path):
    from inception.data.folder import ImageTooLargeError, UnsupportedImageError
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" + b"0" * 64)
    with pytest.raises(UnsupportedImageError, match="photo.jpg' \\(not a JPEG, PNG, WebP, BMP, GIF or TIFF file\\)"):
        load_image(eps)
    ppm = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(ppm, format="PPM")
    with pytest.raises(UnsupportedImageError):
        load_image(ppm)
    big = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(big)
    with pytest.raises(ImageTooLargeError, match="300x200 = 60,000 pixels, over the limit of 50,000"):
        load_image(big, max_pixels=50_000)
    assert load_image(big).size == (300, 200)


def test_large_jpegs_decode_at_reduced_size(tmp_path):
    """`min_side`: a JPEG at least twice as large decodes at 1/2, 1/4 or 1/8 scale (never below
    min_side on its short side); other formats and smaller JPEGs decode whole. After the eval
    resize the reduced decode is the full one within JPEG noise."""
    from inception.infer import decode_side, preprocess_transform
    yy, xx = np.mgrid[0:1600, 0:2400]
    pixels = np.stack([xx * 255 // 2400, yy * 255 // 1600, (xx + yy) % 256], -1).astype(np.uint8)
    big = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(big, quality=90)
    assert load_image(big).size == (2400, 1600)
    assert load_image(big, min_side=146).size == (300, 200)       # 1/8: short side 200 >= 146
    assert load_image(big, min_side=300).size == (600, 400)       # 1/4
    assert load_image(big, min_side=500).size == (1200, 800)      # 1/2
    assert load_image(big, min_side=801).size == (2400, 1600)     # under twice min_side: whole
    gray = tmp_path / "gray.jpg"
    Image.fromarray(pixels[..., 0]).save(gray, quality=90)
    assert load_image(gray, min_side=146).size == (300, 200) and load_image(gray, min_side=146).mode == "RGB"
    png = tmp_path / "big.png"
    Image.fromarray(pixels[:400, :600]).save(png)
    assert load_image(png, min_side=50).size == (600, 400)
    meta = {"image_size": 128, "crop_pct": 0.875}
    tf = preprocess_transform(meta)
    full, reduced = tf(load_image(big)), tf(load_image(big, min_side=decode_side(meta)))
    assert decode_side(meta) == 146 and full.shape == reduced.shape == (3, 128, 128)
    assert float((full - reduced).abs().mean()) < 0.05           # normalized units: about 3/255 of a pixel


def test_val_may_lack_classes_but_not_add_them(tree, identity_dc):
    write_image(tree / "val" / "bird" / "b.png")
    write_image(tree / "val" / "fish" / "f.png")
    with pytest.raises(UserError, match="has classes not in the training data: bird, fish"):
        build_datasets(_cfg(tree), identity_dc)


def test_val_labels_follow_train_classes(tree, identity_dc):
    (tree / "val" / "cat" / "v.webp").rename(tree / "v.webp")
    (tree / "val" / "cat").rmdir()
    write_image(tree / "val" / "dog" / "d.png")
    _, val = build_datasets(_cfg(tree), identity_dc)
    assert val.classes == ["cat", "dog"] and val.targets == [1]
    # eval without a checkpoint also labels by the train classes
    assert build_eval_dataset(_cfg(tree), identity_dc).targets == [1]
    ds = build_eval_dataset(_cfg(tree), identity_dc, class_names=["dog", "x"])
    assert ds.classes == ["dog", "x"] and ds.targets == [0]
    with pytest.raises(UserError, match="not in the checkpoint's classes: dog"):
        build_eval_dataset(_cfg(tree), identity_dc, class_names=["cat"])


def test_empty_class_folder(tree, identity_dc):
    (tree / "train" / "empty").mkdir()
    (tree / "train" / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"class folder '.*empty' has no images"):
        build_datasets(_cfg(tree), identity_dc)


def test_split_without_class_folders(tmp_path, identity_dc):
    write_image(tmp_path / "train" / "loose.jpg")
    with pytest.raises(UserError, match="has no class sub-folders"):
        build_datasets(_cfg(tmp_path), identity_dc)


def test_missing_directories(tree, identity_dc):
    with pytest.raises(UserError, match="data directory '.*nope' does not exist"):
        build_datasets(_cfg(tree / "nope"), identity_dc)
    with pytest.raises(UserError, match=r"split folder '.*valid' does not exist \(found: train, val\)"):
        build_datasets(_cfg(tree, val_split="valid"), identity_dc)
    with pytest.raises(UserError, match="needs its data: pass --data-dir PATH"):
        build_datasets(DataCfg(dataset="folder"), identity_dc)


def test_non_image_file_names_it(tree, identity_dc):
    bad = tree / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    train, _ = build_datasets(_cfg(tree), identity_dc)
    index = [p for p, _ in train.samples].index(str(bad))
    with pytest.raises(UserError, match=r"cannot read image '.*broken\.jpg'"):
        train[index]
    # Raised in a DataLoader worker, it stays a one-line UserError.
    batches = iter(DataLoader(torch.utils.data.Subset(train, [index]), num_workers=1))
    with pytest.raises(UserError) as info:
        next(batches)
    message = str(info.value)
    batches._shutdown_workers()  # now, not at exit (the exception keeps the iterator alive)
    assert message.startswith("cannot read image") and "\n" not in message


def _write_list(path: Path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def listed(tmp_path):
    for name in ("a 1.png", "b.jpg", "c.png"):
        write_image(tmp_path / "imgs" / name)
    _write_list(tmp_path / "train_list.txt", ["imgs/a 1.png 0", "", "imgs/b.jpg   2", "imgs/c.png\t1"])
    _write_list(tmp_path / "val_list.txt", ["imgs/c.png 1"])
    return tmp_path


def test_list_files(listed, identity_dc):
    train, val = build_datasets(DataCfg(dataset="list", data_dir=str(listed), image_size=16), identity_dc)
    assert train.classes == val.classes == ["0", "1", "2"]
    assert [(Path(p).name, y) for p, y in train.samples] == [("a 1.png", 0), ("b.jpg", 2), ("c.png", 1)]
    assert train[0][0].shape == (3, 16, 16) and val.targets == [1]


def test_list_label_names_and_explicit_paths(listed, identity_dc):
    (listed / "label_list.txt").write_text("0 tabby cat\n1 dog\n2 bird\n")
    other = _write_list(listed / "mine.txt", ["imgs/b.jpg 2"])
    cfg = DataCfg(dataset="list", data_dir=str(listed), val_list=str(other))
    train, val = build_datasets(cfg, identity_dc)
    assert train.classes == ["tabby cat", "dog", "bird"] and val.targets == [2]
    (listed / "label_list.txt").unlink()
    (listed / "labels.txt").write_text("x\ny\n")
    with pytest.raises(UserError, match="uses label 2 but the label names file .* names only 2 classes"):
        build_datasets(cfg, identity_dc)


def test_list_errors(listed, identity_dc):
    cfg = DataCfg(dataset="list", data_dir=str(listed))
    _write_list(listed / "val_list.txt", ["imgs/c.png 1", "imgs/b.jpg"])
    with pytest.raises(UserError, match=r"val_list.txt' line 2 is malformed: 'imgs/b.jpg'"):
        build_datasets(cfg, identity_dc)
    _write_list(listed / "val_list.txt", ["imgs/c.png 7"])
    with pytest.raises(UserError, match="has classes not in the training data: 7"):
        build_datasets(cfg, identity_dc)
    _write_list(listed / "val_list.txt", ["missing/c.png 1"])
    with pytest.raises(UserError, match="does not exist; list paths are relative to data.data_dir"):
        build_datasets(cfg, identity_dc)
    (listed / "val_list.txt").unlink()
    with pytest.raises(UserError, match="list file '.*val_list.txt' does not exist"):
        build_datasets(cfg, identity_dc)


@pytest.fixture(scope="module")
def cifar_jpg(tmp_path_factory):
    """A few real CIFAR-10 JPEGs per class and split, read straight from the archive."""
    if not CIFAR_JPG.is_file():
        pytest.skip(f"{CIFAR_JPG} is absent")
    root, per_class, counts = tmp_path_factory.mktemp("cifar10-jpg"), 2, {}
    with tarfile.open(CIFAR_JPG, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            key = tuple(parts[:2])
            if counts.get(key, 0) < per_class:
                counts[key] = counts.get(key, 0) + 1
                (root / parts[0] / parts[1]).mkdir(parents=True, exist_ok=True)
                (root / member.name).write_bytes(tar.extractfile(member).read())
            if len(counts) == 20 and min(counts.values()) == per_class:
                break
    return root


def test_real_cifar10_jpegs(cifar_jpg):
    dc = IDENTITY.replace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    train, val = build_datasets(DataCfg(dataset="cifar10", data_dir=str(cifar_jpg)), dc)  # val -> test
    assert train.classes == val.classes == CIFAR10_CLASSES
    assert len(train) == len(val) == 20 and sorted(val.targets) == sorted(list(range(10)) * 2)
    x, _ = train[0]
    assert x.shape == (3, 32, 32) and x.std() > 0.1
