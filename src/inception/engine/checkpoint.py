"""Checkpoints: atomic writes, the newest N kept, plus ``last`` and ``best``.

Layout of a run directory's ``checkpoints/``::

    step_00001200.pt    periodic (every ckpt_interval steps and at every epoch end)
    last.pt             the newest checkpoint
    best.pt             the epoch-end checkpoint with the best validation top-1

``last.pt`` and ``best.pt`` are hard links to periodic files where the file system allows
(no extra space, no second write), else copies; every name is swapped in with
``os.replace``, so a crash at any moment leaves the previous file intact.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.pretrained import CHECKPOINT_FORMAT
from ..utils import atomic_write

_PERIODIC = re.compile(r"^step_(\d+)\.pt$")


def save_file(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temp file, fsync, rename."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by this project (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); it may be truncated or "
                              "not an inception checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"'{path}' is not an inception checkpoint; for torchvision/timm weights use --pretrained")
    return ckpt


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"'{path}' is a directory without checkpoints/last.pt; give a run directory or a .pt file")
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; give a run directory or a .pt file")
    return path


def _link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class CheckpointManager:
    """Writes periodic checkpoints into ``run_dir/checkpoints`` and keeps the newest ``keep_max``."""

    def __init__(self, run_dir: str | Path, keep_max: int) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_max = keep_max

    def periodic(self) -> list[Path]:
        files = [p for p in self.dir.iterdir() if _PERIODIC.match(p.name)]
        return sorted(files, key=lambda p: int(_PERIODIC.match(p.name).group(1)))

    def save(self, state: dict, step: int, *, best: bool = False) -> Path:
        path = self.dir / f"step_{step:08d}.pt"
        save_file(state, path)
        _link(path, self.dir / "last.pt")
        if best:
            _link(path, self.dir / "best.pt")
        for old in self.periodic()[:-self.keep_max]:
            old.unlink(missing_ok=True)
        return path
