"""Checkpoints: atomic writes, the newest N kept, plus ``last`` and ``best``.

Layout of a run directory's ``checkpoints/``::

    step_00001200.pt    periodic (every ckpt_interval steps and at every epoch end)
    last.pt             the newest checkpoint
    best.pt             the epoch-end checkpoint with the best validation top-1

``last.pt`` and ``best.pt`` are hard links to periodic files where the file system allows
(no extra space, no second write), else copies; every name is swapped in with
``os.replace``, so a crash at any moment leaves the previous file intact.

Every checkpoint has a ``<name>.sha256`` beside it, written once the checkpoint is in
place. :func:`load_latest` (auto-resume) walks the checkpoints newest first and skips, with
a warning, any whose checksum does not match or that cannot be read, so a checkpoint
damaged after it was written (a truncated copy, a bad disk) costs only the steps since
the previous one. Temp files left by a write that was killed are removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.pretrained import CHECKPOINT_FORMAT
from ..utils import atomic_write, atomic_write_text

log = logging.getLogger("inception")

_PERIODIC = re.compile(r"^step_(\d+)\.pt$")


def checksum_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def save_file(state: dict, path: str | Path) -> str:
    """``torch.save`` to a temp file, fsync, rename; then its SHA-256 beside it. Returns the digest."""
    atomic_write(path, lambda f: torch.save(state, f))
    digest = sha256_file(path)
    atomic_write_text(checksum_path(path), digest + "\n")
    return digest


def verify_checksum(path: str | Path) -> bool | None:
    """True when ``path`` matches its ``.sha256``, False when not, None without one."""
    side = checksum_path(path)
    if not side.is_file():
        return None
    try:
        expected = side.read_text().split()[0]
    except (OSError, IndexError):
        return False
    return sha256_file(path) == expected


def load_checkpoint(path: str | Path, *, verify: bool = True) -> dict:
    """Load a checkpoint written by this project (``weights_only=True``), checking its
    SHA-256 when it has one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path")
    if verify and verify_checksum(path) is False:
        raise CheckpointError(f"checkpoint '{path}' is corrupt (its SHA-256 does not match {checksum_path(path).name}); "
                              "use an earlier checkpoint of the run")
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
    for a, b in ((src, dst), (checksum_path(src), checksum_path(dst))):
        if not a.exists():
            continue
        tmp = b.with_name(f".{b.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(a, tmp)
        except OSError:
            shutil.copyfile(a, tmp)
        os.replace(tmp, b)


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """A run's checkpoints, newest first: periodic ones by step, then ``last.pt``."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    periodic = sorted((p for p in d.iterdir() if _PERIODIC.match(p.name)),
                      key=lambda p: -int(_PERIODIC.match(p.name).group(1)))
    last = d / "last.pt"
    return periodic + ([last] if last.is_file() else [])


def load_latest(run_dir: str | Path) -> tuple[Path, dict] | None:
    """The newest checkpoint of ``run_dir`` that passes its checksum and loads, with a
    warning for each one skipped; None when the run has no usable checkpoint."""
    for path in checkpoint_candidates(run_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            log.warning("%s; trying the previous checkpoint", e)
    return None


class CheckpointManager:
    """Writes periodic checkpoints into ``run_dir/checkpoints`` and keeps the newest ``keep_max``."""

    def __init__(self, run_dir: str | Path, keep_max: int) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_max = keep_max
        for stale in self.dir.glob(".*.tmp"):   # a write killed half-way
            stale.unlink(missing_ok=True)

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
            checksum_path(old).unlink(missing_ok=True)
        return path
