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
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import accel
from .._version import __version__
from ..config import Config, apply, set_key, validate
from ..errors import CheckpointError, UserError
from ..models.pretrained import CHECKPOINT_FORMAT
from ..utils import atomic_write, atomic_write_text, short_list
from .ema import checkpoint_entries

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


def load_own_state(model: torch.nn.Module, state_dict: dict, path) -> None:
    """Resume ``model`` from its own run's checkpoint, strictly: every key and shape must
    match (unlike pretrained weights, whose classifier may be re-initialised). A mismatch is a
    :class:`CheckpointError` naming the keys."""
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(target[k].shape)}" for k, v in state_dict.items()
                  if k in target and tuple(v.shape) != tuple(target[k].shape)]
    problems = [f"{what}: {short_list(keys, 4)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"checkpoint '{path}' does not fit the model this run builds ({'; '.join(problems)}): "
                              "resume with the run's own settings (its config.yaml: model options, the data's "
                              "classes), or start a new run with --no-resume or another --output-dir")
    model.load_state_dict(state_dict)


def load_checkpoint(path: str | Path, *, verify: bool = True) -> dict:
    """Load a checkpoint written by this project (``weights_only=True``), checking its
    SHA-256 when it has one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path")
    if verify and verify_checksum(path) is False:
        raise CheckpointError(f"checkpoint '{path}' is corrupt (its SHA-256 does not match "
                              f"{checksum_path(path).name}); "
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
        raise CheckpointError(f"'{path}' is a directory without checkpoints/last.pt; give a run directory or "
                              "a .pt file")
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


# --------------------------------------------------------------------------------------
# What a training checkpoint holds, and resuming from one

def rng_state() -> dict:
    """Python, NumPy, torch CPU RNG states, and those of the accelerators in use (under their
    device type: ``"cuda"``, ``"npu"``...), in types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    state.update(accel.rng_states())
    return state


def set_rng_state(state: dict) -> None:
    if not state:
        return
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    accel.set_rng_states({k: v for k, v in state.items() if k not in ("python", "numpy", "torch")})


def checkpoint_state(*, cfg: Config, model, optimizer, scheduler, class_names, data_config, epoch: int,
                     epoch_step: int, global_step: int, best_top1: float, metrics: dict | None,
                     scaler: dict | None = None, ema=None) -> dict:
    """Everything a checkpoint holds: enough to resume, evaluate or export on its own.
    ``data_config`` is the run's preprocessing (the model card's, with its weights' mean/std).
    ``(epoch, epoch_step)`` is where training goes on: batch ``epoch_step`` of epoch ``epoch``.
    With an EMA (:class:`~.ema.ModelEma`), ``ema`` holds its weights and ``best_source`` says
    which of ``model`` and ``ema`` scored higher at the last evaluation: the weights that
    eval, export and --pretrained take."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "inception_version": __version__,
        "arch": cfg.model.name,
        "model_class": type(model).__name__,
        "model_options": dict(cfg.model.options),
        "num_classes": model.num_classes,
        "class_names": list(class_names),
        "data_config": data_config.to_dict(),
        "image_size": cfg.data.image_size or data_config.input_size[1],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler or {},
        "epoch": epoch,
        "epoch_step": epoch_step,
        "global_step": global_step,
        "best_top1": best_top1,
        "metrics": metrics or {},
        "config": cfg.to_dict(),
        "rng": rng_state(),
        "best_source": (metrics or {}).get("best_source", "model"),
        **checkpoint_entries(ema),
    }


def resume_config(resume: str | os.PathLike, overrides: dict | None = None) -> Config:
    """The config of the run that wrote checkpoint ``resume`` (a file or a run directory),
    with ``overrides`` (e.g. more epochs, another device) on top. The run continues in the
    same run directory unless ``train.output_dir`` is overridden."""
    path = resolve_checkpoint(resume)
    ckpt = load_checkpoint(path)
    cfg = apply(Config(), ckpt["config"], f" in {path}")
    cfg.train.output_dir = str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def find_resume(resume: str | os.PathLike | None, run_dir: Path, *, auto_resume: bool, arch: str,
                explicit_dir: bool) -> tuple[Path | None, dict | None, bool]:
    """``(path, checkpoint, automatic)`` of the checkpoint a run starts from: ``resume`` (a
    file, or a run directory's newest good checkpoint), else with ``auto_resume`` the newest
    good one in an explicit output directory ``run_dir``; ``(None, None, False)`` for none."""
    if resume and Path(resume).is_dir():
        found = load_latest(resume)
        if found is None:
            raise UserError(f"'{resume}' holds no readable checkpoint (checkpoints/step_*.pt or last.pt); "
                            "give a checkpoint file, or start a new run")
        return (*found, False)
    if resume:
        path = resolve_checkpoint(resume)
        return path, load_checkpoint(path), False
    if auto_resume and explicit_dir:
        found = load_latest(run_dir)
        if found is not None:
            if found[1].get("arch") != arch:
                raise UserError(f"'{run_dir}' holds a run of {found[1].get('arch')}, not {arch}; choose another "
                                "--output-dir, or pass --no-resume to start over there")
            return (*found, True)
    return None, None, False


def save_checkpoint(state, epoch: int, epoch_step: int, best: bool = False) -> None:
    """Rank 0 writes a checkpoint to go on from batch ``epoch_step`` of ``epoch``; never one
    of a non-finite model, and a failed write (disk full, permissions) is reported and leaves
    the previous checkpoint intact."""
    if not state.main:
        return
    if not bool(torch.stack([p.detach().isfinite().all() for p in state.raw_model.parameters()]).all()):
        raise UserError(f"the model's weights became NaN/Inf by step {state.global_step}; no checkpoint was "
                        f"written, so the last good one stays in {state.run_dir / 'checkpoints'}; lower --lr "
                        "or enable optim.grad_clip")
    ckpt = checkpoint_state(cfg=state.cfg, model=state.raw_model, optimizer=state.optimizer,
                            scheduler=state.scheduler, class_names=state.class_names,
                            data_config=state.data_config, epoch=epoch,
                            epoch_step=epoch_step, global_step=state.global_step, best_top1=state.best_top1,
                            metrics=state.last_metrics, scaler=state.precision.state_dict(), ema=state.ema)
    try:
        state.ckpts.save(ckpt, state.global_step, best=best)
        state.save_failed = False
    except OSError as e:
        state.save_failed = True
        log.error("could not write the checkpoint of step %d (%s); the previous checkpoint is intact and training "
                  "goes on; free space or fix permissions in %s", state.global_step, e.strerror or e, state.ckpts.dir)
