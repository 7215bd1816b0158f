"""The core install alone (no extras): run by `make test-core` in a fresh virtual environment.

It trains one epoch on a small folder dataset, evaluates and infers with the checkpoint, and
checks that a command of a missing extra (export, plot) stops with the one line naming it."""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent / "inception"


def run(*args: str, expect: int = 0) -> str:
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == expect, f"inception {' '.join(args)} exited {out.returncode}:\n{text[-3000:]}"
    return text


def main() -> None:
    for module in ("onnx", "onnxruntime", "matplotlib", "sklearn", "fastapi"):
        try:
            __import__(module)
        except ImportError:
            continue
        raise AssertionError(f"{module} is installed: this check needs the core install alone")
    with tempfile.TemporaryDirectory() as tmp:
        root, rng = Path(tmp), np.random.default_rng(0)
        for split, n in (("train", 12), ("val", 4)):
            for c, label in enumerate(("cat", "dog")):
                (root / "data" / split / label).mkdir(parents=True)
                for i in range(n):
                    pixels = np.clip(rng.normal(60 + 120 * c, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(root / "data" / split / label / f"{i}.jpg")
        text = run("train", "--model", "googlenet", "--dataset", "folder", "--data-dir", str(root / "data"),
                   "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--workers", "0",
                   "--output-dir", str(root / "run"))
        assert "1 epochs, 3 steps" in text, text[-2000:]
        ckpt = str(root / "run" / "checkpoints" / "last.pt")
        assert "top1=" in run("eval", "--checkpoint", ckpt)
        assert "acc=" in run("infer", "--model", ckpt, "--input", str(root / "data" / "val"))
        for args, extra in ((("export", "--checkpoint", ckpt), "export"), (("plot", str(root / "run")), "plot")):
            line = run(*args, expect=2).strip().splitlines()[-1]
            assert line.startswith("error: ") and f"pip install 'inception[{extra}]'" in line, line
    print("core install: trained 1 epoch on a folder dataset, evaluated and inferred; export and plot name "
          "their extras")


if __name__ == "__main__":
    main()
