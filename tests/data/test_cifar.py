import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from inception.config import DataCfg
from inception.data import build_datasets, build_eval_dataset
from inception.data.cifar import CIFAR10_CLASSES
from inception.errors import UserError

from .conftest import IDENTITY, to_uint8, write_image

CIFAR100_CLASSES = sorted(f"class{i:03d}" for i in range(100))


def _records(num_classes: int, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    rng.shuffle(labels)
    return rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), labels


def write_cifar(root: Path, dataset: str, layout: str, protocol: int = 2) -> dict:
    """Official-format CIFAR files with random pixels; returns the arrays written."""
    n = 10 if dataset == "cifar10" else 100
    train, test = _records(n, 2 if n == 100 else 3, 1), _records(n, 1, 2)
    if dataset == "cifar10":
        folder = root / ("cifar-10-batches-bin" if layout == "binary" else "cifar-10-batches-py")
        chunks = np.array_split(np.arange(len(train[1])), 5)
        files = [(f"data_batch_{i + 1}", train[0][c], train[1][c]) for i, c in enumerate(chunks)]
        files.append(("test_batch", *test))
    else:
        folder = root / ("cifar-100-binary" if layout == "binary" else "cifar-100-python")
        files = [("train", *train), ("test", *test)]
    folder.mkdir(parents=True)
    for name, data, labels in files:
        if layout == "binary":
            head = labels[:, None].astype(np.uint8)
            if dataset == "cifar100":
                head = np.concatenate([(labels[:, None] // 5).astype(np.uint8), head], axis=1)  # coarse, fine
            np.concatenate([head, data], axis=1).tofile(folder / f"{name}.bin")
        else:
            key = b"labels" if dataset == "cifar10" else b"fine_labels"
            obj = {b"batch_label": name.encode(), key: labels.tolist(), b"data": data}
            with open(folder / name, "wb") as f:
                pickle.dump(obj, f, protocol=protocol)
    names = CIFAR10_CLASSES if dataset == "cifar10" else CIFAR100_CLASSES
    if layout == "binary" and dataset == "cifar100":
        (folder / "fine_label_names.txt").write_text("\n".join(names) + "\n")
    elif layout == "pickle":
        meta, key = ("batches.meta", b"label_names") if dataset == "cifar10" else ("meta", b"fine_label_names")
        with open(folder / meta, "wb") as f:
            pickle.dump({key: [s.encode() for s in names]}, f, protocol=protocol)
    return {"folder": folder, "train": train, "test": test, "classes": names}


def _exact_cfg(dataset, data_dir):
    return DataCfg(dataset=dataset, data_dir=str(data_dir), augment="none", image_size=32)


@pytest.mark.parametrize("layout", ["binary", "pickle"])
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_decodes_what_was_written(tmp_path, dataset, layout):
    written = write_cifar(tmp_path, dataset, layout)
    train, val = build_datasets(_exact_cfg(dataset, tmp_path), IDENTITY)
    assert train.classes == val.classes == written["classes"]
    for ds, (data, labels) in ((train, written["train"]), (val, written["test"])):
        assert len(ds) == len(labels) and ds.labels.tolist() == labels.tolist()
        expected = torch.from_numpy(data).reshape(-1, 3, 32, 32)
        assert torch.equal(ds.images, expected)
        for i in (0, len(ds) - 1):  # through the transforms too
            x, y = ds[i]
            assert x.shape == (3, 32, 32) and y == labels[i]
            assert torch.equal(to_uint8(x), expected[i])


def test_data_dir_may_be_the_extracted_folder(tmp_path):
    written = write_cifar(tmp_path, "cifar10", "binary")
    train, val = build_datasets(_exact_cfg("cifar10", written["folder"]), IDENTITY)
    assert (len(train), len(val)) == (30, 10)
    assert train.classes == CIFAR10_CLASSES  # no batches.meta.txt: the standard names


def test_cifar10_binary_meta_names(tmp_path):
    written = write_cifar(tmp_path, "cifar10", "binary")
    names = [f"c{i}" for i in range(10)]
    (written["folder"] / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    assert build_eval_dataset(_exact_cfg("cifar10", tmp_path), IDENTITY).classes == names


def test_protocol_5_pickles(tmp_path):
    write_cifar(tmp_path, "cifar10", "pickle", protocol=5)
    train, _ = build_datasets(_exact_cfg("cifar10", tmp_path), IDENTITY)
    assert len(train) == 30


def test_truncated_binary_file(tmp_path):
    written = write_cifar(tmp_path, "cifar10", "binary")
    path = written["folder"] / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"test_batch\.bin' is truncated: record 10 is incomplete "
                                        r"\(2973 of 3073 bytes, at byte 27657\)"):
        build_datasets(_exact_cfg("cifar10", tmp_path), IDENTITY)


def test_missing_batch_file(tmp_path):
    written = write_cifar(tmp_path, "cifar10", "binary")
    (written["folder"] / "data_batch_3.bin").unlink()
    with pytest.raises(UserError, match="data_batch_3.bin' is missing"):
        build_datasets(_exact_cfg("cifar10", tmp_path), IDENTITY)


def test_pickle_with_code_is_refused(tmp_path):
    written = write_cifar(tmp_path, "cifar10", "pickle")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(written["folder"] / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(UserError, match="test_batch' is refused, for safety: it holds the global builtins.print"):
        build_eval_dataset(_exact_cfg("cifar10", tmp_path), IDENTITY)


@pytest.mark.parametrize("payload,expected", [
    # numpy.f2py.__main__ runs f2py's command line on import: the old prefix rule let it through
    (b"\x80\x02cnumpy.f2py.__main__\n_reconstruct\n)R.", "refused, for safety: it holds the global "
     "numpy.f2py.__main__._reconstruct"),
    (pickle.dumps({b"data": np.array([object()] * 2, dtype=object), b"labels": [0, 1]}, protocol=2),
     "refused, for safety: it holds an array of Python objects (object dtype)"),
    (b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.", "is not a valid CIFAR python pickle "
     "(MalformedPickleError: a malformed pickle"),
])
def test_hostile_batches_are_refused_in_one_line(tmp_path, payload, expected):
    import subprocess
    import sys
    written = write_cifar(tmp_path, "cifar10", "pickle")
    (written["folder"] / "data_batch_1").write_bytes(payload)
    out = subprocess.run([sys.executable, "-m", "inception", "train", "--dataset", "cifar10", "--data-dir",
                          str(tmp_path), "--epochs", "1", "--output-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Unknown option" not in out.stdout + out.stderr and "Traceback" not in out.stderr
    assert "data_batch_1' is" in out.stderr and expected in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_no_cifar_data(tmp_path):
    with pytest.raises(UserError, match="no cifar10 data in"):
        build_datasets(_exact_cfg("cifar10", tmp_path), IDENTITY)
    with pytest.raises(UserError, match="does not exist"):
        build_datasets(_exact_cfg("cifar10", tmp_path / "nope"), IDENTITY)


def test_eval_with_checkpoint_class_names(tmp_path):
    write_cifar(tmp_path, "cifar10", "binary")
    cfg = _exact_cfg("cifar10", tmp_path)
    plain = build_eval_dataset(cfg, IDENTITY)
    names = list(reversed(CIFAR10_CLASSES))
    ds = build_eval_dataset(cfg, IDENTITY, class_names=names)
    assert ds.classes == names and torch.equal(ds.labels, 9 - plain.labels)
    with pytest.raises(UserError, match="not in the checkpoint's classes: truck"):
        build_eval_dataset(cfg, IDENTITY, class_names=CIFAR10_CLASSES[:-1])
    assert len(build_eval_dataset(cfg, IDENTITY, split="train")) == 30


def test_image_folder_layout_falls_back_to_test(tmp_path):
    for split in ("train", "test"):
        for name in ("cat", "airplane"):
            write_image(tmp_path / split / name / "0.png", size=(32, 32))
    cfg = DataCfg(dataset="cifar10", data_dir=str(tmp_path))  # val_split 'val' is absent: use test/
    train, val = build_datasets(cfg, IDENTITY)
    assert train.classes == val.classes == ["airplane", "cat"] and val.source.endswith("test")
    with pytest.raises(UserError, match="split folder '.*nope' does not exist"):
        build_eval_dataset(cfg, IDENTITY, split="nope")


def test_fixed_splits_reject_other_names():
    with pytest.raises(UserError, match="digits has the splits 'train' and 'test', not 'holdout'"):
        build_eval_dataset(DataCfg(), IDENTITY, split="holdout")
