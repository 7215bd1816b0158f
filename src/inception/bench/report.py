"""``inception bench gpu-report``: every GPU figure the docs promise, with its peers, in one
run that fits a short GPU window, as a Markdown table (and JSON) written as each step ends.

The steps (:data:`STEPS`), most important first; each is a row of the table with the command
that reproduces it:

1. ``googlenet``: GoogLeNet training at 224, bf16, eager, against torchvision's GoogLeNet in a
   plain loop, side by side; 5 steps profiled (where a step's time goes, how idle the GPU is);
2. ``googlenet-compiled``: the same with the trainer's compiled step, against torchvision +
   ``torch.compile(model)``;
3. ``cifar``: the fast CIFAR-10 recipe (``googlenet_cifar10_fast``) trained to its accuracy,
   timed from the command's start (imports, data loading and compilation included);
4. ``inception-v4``, ``inception-v4-compiled``: Inception v4 training at 299 against timm's;
5. ``photos``: ``inception train`` end to end on real JPEG photos (at least 10,000: re-encoded,
   flipped and cropped copies of the image data's photos, made in a temporary folder), with
   JPEGs decoded on the GPU, against the same step fed by torchvision's ImageFolder + PIL
   DataLoader and against the synthetic-data figure of step 1; epochs after the first only;
6. ``googlenet-cudagraphs``: the compiled step replayed as CUDA graphs (``reduce-overhead``);
7. ``onnxruntime``: ONNX Runtime's CUDA provider against PyTorch eager, inference.

Each step runs as its own ``python -m inception ...`` process with a time limit (a compilation
cannot be interrupted in-process), inside the report's overall ``budget``: a step that would
start with too little of it left is skipped and says so, so a cut run keeps every figure it
measured. Without CUDA the same steps run in a tiny form (small images, a few steps, fp32, no
compilation, a few images of each dataset), so the code paths are checked in about a minute on
a CPU; the table then says that its figures are CPU smoke figures, not GPU ones.

Data (no downloads): ``data`` is a folder dataset or a ``.tar``/``.tar.gz`` of class folders
(default: ``data/imagewoof-sample.tar.gz`` or ``data/imagenette-160.tar.gz``, in the working
directory or beside the package's checkout); ``cifar`` is CIFAR-10 (default
``data/cifar10-jpg.tar.gz``). ``data/`` is git-ignored in this repository, so a GPU machine that
receives only the checkout finds them there. A step whose data are missing says so in its row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import torch
import torchvision
from PIL import Image

from .._version import __version__
from ..accel import resolve_device
from ..data.archive import MAX_MEMBER_BYTES, is_archive
from ..data.folder import is_image_file
from ..errors import UserError
from ..utils import atomic_write_text
from .common import device_label
from .runtime import ort_providers, ort_version

log = logging.getLogger("inception")

LOCAL_DATA = Path("data")          # git-ignored here: what a GPU machine that gets only the checkout can read
IMAGE_ARCHIVES = ("imagewoof-sample.tar.gz", "imagenette-160.tar.gz")
CIFAR_ARCHIVE = "cifar10-jpg.tar.gz"

# (key, the row's title), in the order they run.
STEPS = (("googlenet", "GoogLeNet training, eager"),
         ("trainer", "The trainer on synthetic data"),
         ("googlenet-compiled", "GoogLeNet training, compiled"),
         ("cifar", "CIFAR-10 fast recipe"),
         ("inception-v4", "Inception v4 training, eager"),
         ("inception-v4-compiled", "Inception v4 training, compiled"),
         ("photos", "End to end on real photos"),
         ("serve", "Serving on the GPU"),
         ("googlenet-cudagraphs", "GoogLeNet training, CUDA graphs"),
         ("onnxruntime", "ONNX Runtime CUDA inference"))
STEP_KEYS = tuple(k for k, _ in STEPS)

# The targets on one H100/H200 (checked in the GPU report only).
TARGETS = {"googlenet": 12_000.0, "inception_v4": 2_000.0, "vs_peer": 1.25, "cifar_top1": 93.4,
           "cifar_minutes": 3.0, "photos_vs_synthetic": 0.9, "photos_vs_torchvision": 2.0, "serve_batching": 3.0}
PHOTO_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP")   # what is_image_file's extensions name
MIN_STEP_S = 20.0       # a step is not started with less of the budget left
SERVE_MODULES = ("fastapi", "uvicorn", "httpx", "multipart", "prometheus_client")    # what bench serve imports


@dataclass(frozen=True)
class Plan:
    """The sizes of one report: the GPU one, its quick form, or the CPU smoke one."""

    smoke: bool
    precision: str
    googlenet: tuple[int, int]      # (image size, batch)
    inception_v4: tuple[int, int]
    steps: int
    warmup: int
    workers: int
    synthetic: int                  # train images of the trainer step (made in memory)
    photos: int                     # at least this many photos for the end-to-end step
    photo_size: int                 # its training resolution
    photo_batch: int
    photo_epochs: int
    ort_batches: tuple[int, ...]
    ort_steps: int
    serve: dict                     # bench serve's sizes: clients, duration, warmup, max_batch, images, image_size
    per_class: int | None           # photos per class taken from the image data (None: all)
    limits: dict = field(default_factory=dict)      # step key -> seconds
    cifar_overrides: dict = field(default_factory=dict)
    cifar_per_class: tuple[int, int] | None = None   # (train, test) images per class (None: all)

    @classmethod
    def for_device(cls, device: torch.device, *, quick: bool = False, workers: int | None = None) -> "Plan":
        """The GPU plan on CUDA (``quick``: fewer timed steps), else the CPU smoke plan."""
        if device.type != "cuda":
            return cls(smoke=True, precision="fp32", googlenet=(64, 8), inception_v4=(75, 2), steps=3, warmup=1,
                       workers=2 if workers is None else workers, synthetic=64, photos=48, photo_size=32, photo_batch=8,
                       photo_epochs=2, ort_batches=(1, 8), ort_steps=3, per_class=12,
                       serve={"clients": 2, "duration": 1, "warmup": 0, "max_batch": 4, "images": 8, "image_size": 64,
                              "threads": 1, "workers": 1},
                       limits=dict.fromkeys(STEP_KEYS, 300.0),
                       cifar_overrides={"data.image_size": 16, "train.epochs": 1, "train.batch_size": 16,
                                        "optim.lr": 0.0125, "train.precision": "fp32", "schedule.warmup_epochs": 0,
                                        "train.log_interval": 1, "train.eval_interval": 1},
                       cifar_per_class=(8, 2))
        limits = {"googlenet": 90, "trainer": 90, "googlenet-compiled": 240, "cifar": 240, "inception-v4": 90,
                  "inception-v4-compiled": 300, "photos": 180, "serve": 120, "googlenet-cudagraphs": 180,
                  "onnxruntime": 90}
        return cls(smoke=False, precision="bf16", googlenet=(224, 256), inception_v4=(299, 128),
                   steps=20 if quick else 40, warmup=5 if quick else 10, workers=16 if workers is None else workers,
                   synthetic=8192, photos=10_000, photo_size=224, photo_batch=256, photo_epochs=4, ort_batches=(1, 64),
                   serve={"clients": 32, "duration": 10, "warmup": 3, "max_batch": 32, "images": 256,
                          "image_size": 224, "threads": 4, "workers": 8},
                   ort_steps=10 if quick else 30, per_class=None, limits={k: float(v) for k, v in limits.items()})


@dataclass
class Row:
    key: str
    step: str
    command: str = ""
    figures: str = ""
    seconds: float = 0.0
    values: dict = field(default_factory=dict)     # the raw figures, for --json


@dataclass
class Report:
    date: str
    device: str
    versions: dict
    smoke: bool
    quick: bool
    budget_s: float
    rows: list[Row]
    command: str = "inception bench gpu-report"
    seconds: float = 0.0
    finished: bool = False

    def to_markdown(self) -> str:
        kind = ("CPU smoke figures (no CUDA device: tiny sizes, a few steps, fp32, no compilation; they check the "
                "steps run, they are not GPU figures)" if self.smoke else
                "quick run (fewer timed steps)" if self.quick else "full run")
        state = "" if self.finished else "; **still running or cut short**: the rows below are the steps done"
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        lines = [f"**GPU report** {self.date}, {self.device}; {versions}; {kind}; {_duration(self.seconds)} of a "
                 f"{_duration(self.budget_s)} budget (`{self.command}`){state}.", "",
                 "| step | command | figures |", "|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {_cell(r.step)} | `{_cell(r.command)}` | {_cell(r.figures)} ({r.seconds:.0f} s) |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _rate(x: float) -> str:
    """An img/s figure: whole numbers with thousands separators, 3 significant digits below 100."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _versions() -> dict:
    return {"inception": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnxruntime": ort_version(), "python": sys.version.split()[0]}


# --------------------------------------------------------------------------------------
# Data

def extract_splits(source: Path, dest: Path, splits: dict[str, int | None]) -> str:
    """Copy the ``<split>/<class>/<image>`` files of a folder dataset or of a ``.tar``/``.tar.gz``
    of class folders (read in one pass, as a stream) to ``dest/<split>/<class>/``, for each split
    in ``splits`` (at most that many images of each class; None: all). Returns the folder inside
    the archive that holds the splits (``""``: its top; ``"."`` for a folder)."""
    taken: dict[tuple[str, str], int] = {}
    root = None

    def copy(split: str, cls: str, name: str, read: Callable) -> None:
        n = taken[split, cls] = taken.get((split, cls), 0) + 1
        if splits[split] is None or n <= splits[split]:
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
            with read() as f, open(dest / split / cls / name, "wb") as out:
                shutil.copyfileobj(f, out)

    if source.is_dir():
        root = "."
        for split in splits:
            for path in sorted((source / split).glob("*/*")):
                if path.is_file() and is_image_file(path.name):
                    copy(split, path.parent.name, path.name, lambda path=path: open(path, "rb"))
    else:
        with tarfile.open(source, "r|*") as tar:
            for m in tar:
                parts = PurePosixPath(m.name).parts
                if m.isfile() and len(parts) >= 3 and parts[-3] in splits and is_image_file(m.name):
                    root = "/".join(parts[:-3]) if root is None else root
                    if m.size > MAX_MEMBER_BYTES:
                        raise UserError(f"archive '{source}': member '{m.name}' is {m.size:,} bytes, more than the "
                                        f"{MAX_MEMBER_BYTES >> 20} MiB an image may take; remove it from the archive")
                    copy(parts[-3], parts[-2], parts[-1], lambda m=m: tar.extractfile(m))
    if not any(split == "train" for split, _ in taken):
        raise UserError(f"'{source}' has no train/<class>/<image> files; give a folder dataset or a .tar.gz of "
                        "class folders")
    return root


def _candidates(name: str) -> tuple[Path, ...]:
    """``data/NAME`` in the working directory, then beside the package's checkout."""
    return LOCAL_DATA / name, Path(__file__).resolve().parents[3] / LOCAL_DATA / name


def _find(given: str | Path | None, names: tuple[str, ...]) -> Path | None:
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise UserError(f"'{path}' does not exist; give a folder dataset or a .tar.gz of class folders")
        if path.is_file() and not is_archive(path):
            raise UserError(f"'{path}' is neither a folder dataset nor a .tar/.tar.gz archive of class folders")
        return path
    return next((p for name in names for p in _candidates(name) if p.exists()), None)


def _variant(job: tuple[str, str, int]) -> str:
    """One re-encoded copy of a photo: a random crop of 70-100% of each side, flipped half the
    time, saved as a JPEG of quality 70-95 (seeded by the copy's number)."""
    src, dest, seed = job
    rng = random.Random(seed)
    with Image.open(src, formats=PHOTO_FORMATS) as im:
        im = im.convert("RGB")
        w, h = im.size
        cw, ch = max(1, int(w * rng.uniform(0.7, 1.0))), max(1, int(h * rng.uniform(0.7, 1.0)))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        im = im.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im.save(dest, "JPEG", quality=rng.randint(70, 95))
    return dest


def make_photo_set(source: Path, dest: Path, *, at_least: int, per_class: int | None = None,
                   workers: int = 4) -> dict:
    """A folder dataset of at least ``at_least`` real JPEG photos in ``dest/train`` (and a few
    in ``dest/val``): every photo of ``source``'s splits (a folder dataset or an archive of class
    folders; ``per_class`` of each class at most), then re-encoded, flipped and cropped copies
    of them until there are enough. Returns ``{"photos", "originals", "copies", "seconds"}``."""
    start = time.perf_counter()
    originals = dest / "originals"
    extract_splits(source, originals, {"train": per_class, "val": per_class})
    files = sorted(p for p in originals.glob("*/*/*") if p.is_file())
    if not files:
        raise UserError(f"'{source}' has no photos in train/<class>/ or val/<class>/")
    copies = max(1, -(-at_least // len(files)))
    jobs = []
    for i, path in enumerate(files):
        cls = path.parent.name
        (dest / "train" / cls).mkdir(parents=True, exist_ok=True)
        name = f"{path.parent.parent.name}-{path.stem}"           # the split too: val/x.jpg is not train/x.jpg
        jobs += [(str(path), str(dest / "train" / cls / f"{name}-{k}.jpg"), i * copies + k) for k in range(copies)]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(_variant, jobs, chunksize=32))
    for cls_dir in sorted((dest / "train").iterdir()):      # a small val split: 2 originals of each class
        (dest / "val" / cls_dir.name).mkdir(parents=True, exist_ok=True)
        for path in sorted((originals / "train" / cls_dir.name).glob("*"))[:2] or sorted(
                (originals / "val" / cls_dir.name).glob("*"))[:2]:
            shutil.copy(path, dest / "val" / cls_dir.name / path.name)
    shutil.rmtree(originals)
    return {"photos": len(jobs), "originals": len(files), "copies": copies, "seconds": time.perf_counter() - start}


def _cifar_data(source: Path | None, plan: Plan, workdir: Path) -> Path | None:
    """What ``data.data_dir`` of the CIFAR recipe reads: the archive or folder itself, or (CPU
    smoke) a few images of each class of it in ``train/`` and ``test/`` class folders."""
    if source is None or plan.cifar_per_class is None or (source.is_dir() and not (source / "train").is_dir()):
        return source       # (a folder without train/: the official binary/pickle files, read as they are)
    n_train, n_test = plan.cifar_per_class
    extract_splits(source, workdir / "cifar", {"train": n_train, "test": n_test, "val": n_test})
    return workdir / "cifar"


# --------------------------------------------------------------------------------------
# Running one step

@dataclass
class Outcome:
    rc: int | None              # None: killed at its time limit
    seconds: float
    output: str                 # the last lines of its stdout and stderr

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self, limit: float) -> str:
        if self.rc is None:
            return f"cut at its {limit:.0f} s time limit"
        lines = [ln for ln in self.output.splitlines() if ln.strip() and not ln.startswith(("INFO", "  warnings"))]
        last = lines[-1].strip() if lines else f"exit status {self.rc}"
        return f"failed (exit {self.rc}): {last[:300]}"


def run_inception(args: list[str], limit: float, *, log_path: Path) -> Outcome:
    """``python -m inception ARGS`` with this very package, its output streamed to ``log_path``,
    in a session of its own that is killed (compile workers and DataLoader workers included)
    after ``limit`` seconds, or when this process is interrupted."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    command = [sys.executable, "-m", "inception", *args]
    log.info("gpu report: %s", " ".join(["inception", *args]))
    start = time.perf_counter()
    rc: int | None = None
    with open(log_path, "w+", encoding="utf-8", errors="replace") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(limit, 1.0))
        except subprocess.TimeoutExpired:
            rc = None
        finally:       # also on KeyboardInterrupt / SIGTERM: no orphan keeps the GPU
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        text = out.read()
    return Outcome(rc=rc, seconds=time.perf_counter() - start, output=text[-4000:])


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _epochs(run_dir: Path) -> list[dict]:
    records = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    except (OSError, ValueError):
        pass
    return [r for r in records if r.get("kind") == "epoch"]


# --------------------------------------------------------------------------------------
# The steps

class _Context:
    def __init__(self, plan: Plan, device: torch.device, workdir: Path, images: Path | None, cifar: Path | None,
                 cifar_shown: Path | None, deadline: float, log_dir: Path) -> None:
        self.plan, self.device, self.workdir, self.log_dir = plan, device, workdir, log_dir
        self.images, self.cifar, self.cifar_shown = images, cifar, cifar_shown
        self.deadline = deadline
        self.results: dict[str, dict] = {}        # step key -> its parsed results

    def limit(self, key: str) -> float:
        return min(self.plan.limits[key], self.deadline - time.perf_counter())


def _run_json(ctx: _Context, key: str, args: list[str], row: Row) -> dict | None:
    """Run the child ``inception ARGS --json FILE`` of step ``key`` within its limit; its JSON,
    or None with the reason in ``row.figures``."""
    out = ctx.workdir / f"{key}.json"
    limit = ctx.limit(key)
    outcome = run_inception([*args, "--json", str(out)], limit, log_path=ctx.log_dir / f"{key}.log")
    doc = _read_json(out)
    if doc is None:
        row.figures = outcome.why(limit)
    return doc


def _model_args(name: str, plan: Plan, device: torch.device, *, compile: bool, mode: str = "default",
                peers: tuple[str, ...] = (), profile: bool = False) -> list[str]:
    size, batch = getattr(plan, name)
    args = ["bench", "model", name, "--mode", "train", "--precision", plan.precision, "--image-size", str(size),
            "--batch-size", str(batch), "--steps", str(plan.steps), "--warmup", str(plan.warmup),
            "--device", device.type]
    if compile:
        args += ["--compile"] + (["--compile-mode", mode] if mode != "default" else [])
    if peers:
        args += ["--peer", *peers]
    if profile and not plan.smoke:
        args.append("--profile")
    return args


def _model_figures(doc: dict, plan: Plan, name: str, *, compiled: bool) -> str:
    results = doc.get("results", [])
    ours = next((r for r in results if r["implementation"] == "inception"), None)
    if ours is None:
        return "no result"
    mfu = f", MFU {100 * ours['mfu']:.1f}%" if ours.get("mfu") is not None else ""
    text = f"**{_rate(ours['img_per_s'])} img/s**, {ours['ms_per_step']:.1f} ms/step (p90 {ours['p90_ms']:.1f}){mfu}"
    if ours.get("peak_mem_mb"):
        text += f", peak {ours['peak_mem_mb']:,.0f} MB"
    if ours.get("compile_s") is not None:
        text += f", compiled in {ours['compile_s']:.0f} s ({ours.get('graph_breaks', 0)} graph breaks)"
    text += f"; {ours['step']}"
    for peer in (r for r in results if r["implementation"] != "inception"):
        ratio = ours["img_per_s"] / peer["img_per_s"]
        text += f"; {peer['implementation']} {_rate(peer['img_per_s'])} img/s ({peer['step']}): **{ratio:.2f}x**"
        if compiled and not plan.smoke:
            text += f" (target >= {TARGETS['vs_peer']}x: {_met(ratio >= TARGETS['vs_peer'])})"
    for peer, why in doc.get("skipped_peers", {}).items():
        text += f"; {peer}: not measured ({why})"
    if compiled and not plan.smoke and name in TARGETS:
        text += f"; target >= {TARGETS[name]:,.0f} img/s: {_met(ours['img_per_s'] >= TARGETS[name])}"
    profile = ours.get("profile")
    if profile:
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in list(profile["by_kind_ms"].items())[:5])
        text += (f"; profile: GPU busy {profile['device_busy_ms']:.1f} of {profile['step_ms']:.1f} ms "
                 f"(idle {profile['device_idle_pct']:.0f}%), host {profile['host_ms_per_step']:.1f} ms to launch "
                 f"{profile['kernels_per_step']} kernels; ms by kind: {kinds}")
    return text


def _model_step(key: str, name: str, *, compile: bool, mode: str = "default", peers: tuple[str, ...] = (),
                profile: bool = False) -> Callable[[_Context, Row], None]:
    def run(ctx: _Context, row: Row) -> None:
        plan = ctx.plan
        if compile and plan.smoke:
            row.command = " ".join(["inception", *_model_args(name, plan, ctx.device, compile=True, mode=mode,
                                                               peers=peers)])
            row.figures = "skipped: no compilation in the CPU smoke run (inductor takes minutes on a CPU)"
            return
        args = _model_args(name, plan, ctx.device, compile=compile, mode=mode, peers=peers, profile=profile)
        row.command = " ".join(["inception", *args])
        doc = _run_json(ctx, key, args, row)
        if doc is None:
            return
        ctx.results[key] = doc
        row.values = doc
        row.figures = _model_figures(doc, plan, name, compiled=compile)
    return run


def _trainer_step(ctx: _Context, row: Row) -> None:
    """``inception train`` on synthetic images held on the device, eager, at the sizes of the
    ``googlenet`` step: the whole loop (logging, the loss tally, the non-finite guard, the
    epoch's bookkeeping) against the step alone that ``bench model`` timed."""
    plan = ctx.plan
    size, batch = plan.googlenet
    epochs = 3
    args = ["train", "--dataset", "synthetic", "--model", "googlenet", "--image-size", str(size), "--batch-size",
            str(batch), "--epochs", str(epochs), "--device", ctx.device.type, "--set",
            f"data.synthetic_images={plan.synthetic}", "--set", "data.synthetic_classes=1000", "--set",
            f"train.precision={plan.precision}", "--set", "train.compile=false", "--set", "train.log_interval=50",
            "--set", f"train.eval_interval={epochs}"]
    row.command = " ".join(["inception", *args])
    run_dir = ctx.workdir / "trainer-run"
    limit = ctx.limit("trainer")
    outcome = run_inception([*args, "--output-dir", str(run_dir), "--no-resume", "-q"], limit,
                            log_path=ctx.log_dir / "trainer.log")
    epochs_done = _epochs(run_dir)[1:]        # the first epoch pays cuDNN's autotuning
    if not epochs_done:
        row.figures = outcome.why(limit)
        return
    rate = statistics.median(e["img_per_s"] for e in epochs_done)
    text = f"**{_rate(rate)} img/s** (median of epochs 2-{epochs}, {plan.synthetic:,} images an epoch; eager)"
    bench = next((r for r in ctx.results.get("googlenet", {}).get("results", [])
                  if r["implementation"] == "inception"), None)
    values = {"img_per_s": rate, "epochs": epochs_done}
    if bench is not None:
        values["vs_bench"] = rate / bench["img_per_s"]
        text += (f"; **{rate / bench['img_per_s']:.2f}x** the step alone in `bench model` "
                 f"({_rate(bench['img_per_s'])} img/s, step 1)")
    row.figures = text
    row.values = values


def _cifar_step(ctx: _Context, row: Row) -> None:
    plan = ctx.plan
    sets = [f"{k}={v}" for k, v in plan.cifar_overrides.items()]
    shown = " ".join(f"--set {s}" for s in sets)
    row.command = (f"inception train --config googlenet_cifar10_fast --data-dir {ctx.cifar_shown or 'CIFAR'} "
                   f"--seed 0{' ' + shown if shown else ''}")
    if ctx.cifar is None:
        row.figures = f"skipped: no CIFAR-10 data (give --cifar PATH; {LOCAL_DATA / CIFAR_ARCHIVE} was not found)"
        return
    run_dir = ctx.workdir / "cifar-run"
    args = ["train", "--config", "googlenet_cifar10_fast", "--data-dir", str(ctx.cifar), "--seed", "0",
            "--output-dir", str(run_dir), "--device", str(ctx.device), "--no-resume", "-q"]
    for s in sets:
        args += ["--set", s]
    limit = ctx.limit("cifar")
    try:
        outcome = run_inception(args, limit, log_path=ctx.log_dir / "cifar.log")
    finally:      # the epochs it did, kept beside its log even when the report is cut
        if (run_dir / "metrics.jsonl").exists() and ctx.log_dir != ctx.workdir:
            shutil.copy(run_dir / "metrics.jsonl", ctx.log_dir / "cifar-metrics.jsonl")
    epochs = _epochs(run_dir)
    evals = [e for e in epochs if "val_top1" in e]
    if not evals:
        row.figures = outcome.why(limit) + (f" after {len(epochs)} of the recipe's epochs, "
                                            f"{statistics.median(e['epoch_time_s'] for e in epochs):.1f} s each "
                                            "(median), before its first evaluation" if epochs else "")
        return
    last = evals[-1]
    best = max(max(e["val_top1"], e.get("ema_val_top1", -1.0)) for e in evals)
    steady = [e["epoch_time_s"] for e in epochs[1:]] or [epochs[0]["epoch_time_s"]]
    text = (f"**top-1 {last['val_top1']:.2f}%** at epoch {last['epoch']} (best {best:.2f}%), "
            f"**{_duration(outcome.seconds)} from the command's start**; {len(epochs)} epoch(s), first "
            f"{epochs[0]['epoch_time_s']:.1f} s, then {statistics.median(steady):.1f} s median "
            f"({_rate(statistics.median(e['img_per_s'] for e in epochs[1:] or epochs))} img/s); train top-1 "
            f"{epochs[-1]['train_top1']:.2f}%")
    if not outcome.ok:
        text += f"; {outcome.why(limit)}"
    if not plan.smoke:
        ok = (outcome.ok and last["val_top1"] >= TARGETS["cifar_top1"]
              and outcome.seconds <= 60 * TARGETS["cifar_minutes"])
        text += f"; target >= {TARGETS['cifar_top1']}% within {TARGETS['cifar_minutes']:g} min: {_met(ok)}"
    row.figures = text
    row.values = {"val_top1": last["val_top1"], "best_top1": best, "epochs": len(epochs), "wall_s": outcome.seconds,
                  "finished": outcome.ok, "epoch_records": epochs}


def _photos_step(ctx: _Context, row: Row) -> None:
    plan = ctx.plan
    common = ["--config", "googlenet_imagenet", "--image-size", str(plan.photo_size), "--batch-size",
              str(plan.photo_batch), "--workers", str(plan.workers), "--epochs", str(plan.photo_epochs),
              "--device", str(ctx.device), "--set", f"train.precision={plan.precision}",
              "--set", "train.compile=false", "--set", f"train.eval_interval={plan.photo_epochs}"]
    variants = (("inception, GPU decode", ["--set", "data.gpu_decode=true"]),
                ("inception, CPU decode", []),
                ("torchvision ImageFolder + PIL", ["--set", "data.pipeline=torchvision"]))
    row.command = (f"inception train --data-dir PHOTOS {' '.join(common)} [--set data.gpu_decode=true | --set "
                   "data.pipeline=torchvision]")
    if ctx.images is None:
        row.figures = f"skipped: no image data (give --data PATH; {LOCAL_DATA / IMAGE_ARCHIVES[0]} was not found)"
        return
    made = make_photo_set(ctx.images, ctx.workdir / "photos", at_least=plan.photos, per_class=plan.per_class,
                          workers=os.cpu_count() or 4)
    rates: dict[str, float] = {}
    notes = []
    for label, extra in variants:
        if label.endswith("GPU decode") and ctx.device.type != "cuda":
            continue
        limit = ctx.limit("photos")
        if limit < MIN_STEP_S:
            notes.append(f"{label}: not run (out of the time limit)")
            continue
        run_dir = ctx.workdir / f"photos-{len(rates)}"
        outcome = run_inception(["train", "--data-dir", str(ctx.workdir / "photos"), *common, *extra,
                                 "--output-dir", str(run_dir), "--no-resume", "-q"], limit,
                                log_path=ctx.log_dir / f"photos-{len(rates)}.log")
        epochs = _epochs(run_dir)[1:]      # the first epoch starts the workers (and cuDNN's autotuning)
        if not epochs:
            notes.append(f"{label}: {outcome.why(limit)}")
            continue
        rates[label] = statistics.median(e["img_per_s"] for e in epochs)
    if not rates:
        row.figures = "; ".join(notes) or "no figure"
        return
    text = [f"{label} **{_rate(r)} img/s**" for label, r in rates.items()]
    ours = {label: r for label, r in rates.items() if label.startswith("inception")}
    best = max(ours, key=ours.get) if ours else None
    synthetic = next((r for r in ctx.results.get("googlenet", {}).get("results", [])
                      if r["implementation"] == "inception"), None)
    values = {"img_per_s": rates, "photos": made}
    if best and synthetic is not None and synthetic["image_size"] == plan.photo_size:
        ratio = rates[best] / synthetic["img_per_s"]
        values["vs_synthetic"] = ratio
        text.append(f"{best} / synthetic data (step 1, eager) {_rate(synthetic['img_per_s'])} img/s: **{ratio:.2f}x**"
                    + ("" if plan.smoke else f" (target >= {TARGETS['photos_vs_synthetic']}x: "
                                             f"{_met(ratio >= TARGETS['photos_vs_synthetic'])})"))
    tv = rates.get("torchvision ImageFolder + PIL")
    if tv and best:
        ratio = rates[best] / tv
        values["vs_torchvision"] = ratio
        text.append(f"{best} vs torchvision **{ratio:.2f}x**" + ("" if plan.smoke else
                    f" (target >= {TARGETS['photos_vs_torchvision']}x: "
                    f"{_met(ratio >= TARGETS['photos_vs_torchvision'])})"))
    text.append(f"{made['photos']:,} photos ({made['originals']:,} originals x {made['copies']} re-encoded copies), "
                f"{plan.workers} workers, median of epochs 2-{plan.photo_epochs}")
    row.figures = "; ".join(text + notes)
    row.values = values


def _serve_step(ctx: _Context, row: Row) -> None:
    plan, sv = ctx.plan, ctx.plan.serve
    args = ["bench", "serve", "--model", "googlenet", "--runtime", "torch", "--device", ctx.device.type,
            "--image-size", str(sv["image_size"]), "--concurrency", str(sv["clients"]), "--duration",
            str(sv["duration"]), "--warmup", str(sv["warmup"]), "--max-batch", str(sv["max_batch"]), "--num-images",
            str(sv["images"]), "--threads", str(sv["threads"]), "--workers", str(sv["workers"]), "--infer-passes", "1"]
    if ctx.images is not None:
        args += ["--images", str(ctx.images)]
    row.command = " ".join(["inception", *args])
    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        row.figures = (f"skipped: the serve extra is not installed here ({', '.join(missing)} missing): "
                       "pip install 'inception[serve]'")
        return
    doc = _run_json(ctx, "serve", args, row)
    if doc is None:
        return
    by_mode = {r["mode"]: r for r in doc["results"] if r["concurrency"] == sv["clients"]}
    dyn, one = by_mode.get("dynamic"), by_mode.get("max-batch 1")
    if dyn is None or one is None:
        row.figures = "no result at the top concurrency"
        return
    ratio = dyn["img_per_s"] / one["img_per_s"] if one["img_per_s"] else float("inf")
    text = (f"{sv['clients']} clients: dynamic batching **{_rate(dyn['img_per_s'])} img/s** (p50 {dyn['p50_ms']:.1f} "
            f"ms, mean batch {dyn['mean_batch']:.1f}), --max-batch 1 {_rate(one['img_per_s'])} img/s: "
            f"**{ratio:.2f}x**")
    if not plan.smoke:
        text += f" (target >= {TARGETS['serve_batching']:g}x: {_met(ratio >= TARGETS['serve_batching'])})"
    alone = doc.get("model_alone", {})
    if alone:
        text += "; the model alone " + ", ".join(f"batch {b}: {_rate(v)} img/s" for b, v in alone.items())
    if doc.get("infer_img_per_s"):
        text += f"; inception infer {_rate(doc['infer_img_per_s'])} img/s"
    errors = dyn["errors"] + one["errors"]
    text += f"; {doc['device']}, PyTorch fp32, {errors} errors"
    row.figures = text
    row.values = doc


def _ort_step(ctx: _Context, row: Row) -> None:
    plan = ctx.plan
    size = plan.googlenet[0]
    args = ["bench", "runtime", "googlenet", "--runtime", "torch", "onnxruntime", "--device", ctx.device.type,
            "--image-size", str(size), "--batch-size", *map(str, plan.ort_batches), "--steps", str(plan.ort_steps)]
    row.command = " ".join(["inception", *args])
    providers = ort_providers()
    if "CUDAExecutionProvider" not in providers or ctx.device.type != "cuda":
        why = "no CUDA device" if ctx.device.type != "cuda" else "onnxruntime has no CUDAExecutionProvider"
        row.figures = (f"skipped: {why} (onnxruntime {ort_version()}, providers: {', '.join(providers)}); "
                       "install onnxruntime-gpu on a CUDA machine")
        return
    doc = _run_json(ctx, "onnxruntime", args, row)
    if doc is None:
        return
    results = doc["runtimes"]
    parts = [f"batch {r['batch_size']}: **{_rate(r['img_per_s'])} img/s**, {r['ms_per_batch']:.2f} ms, "
             f"{r['ratio']:.2f}x eager" for r in results if r["runtime"] == "onnxruntime"]
    eager = ", ".join(_rate(r["img_per_s"]) for r in results if r["runtime"] == "torch eager")
    row.figures = "; ".join(parts) + f" (PyTorch eager fp32: {eager} img/s)"
    row.values = doc


RUNNERS: dict[str, Callable[[_Context, Row], None]] = {
    "googlenet": _model_step("googlenet", "googlenet", compile=False, peers=("torchvision",), profile=True),
    "trainer": _trainer_step,
    "googlenet-compiled": _model_step("googlenet-compiled", "googlenet", compile=True, peers=("torchvision",),
                                      profile=True),
    "cifar": _cifar_step,
    "inception-v4": _model_step("inception-v4", "inception_v4", compile=False, peers=("timm",)),
    "inception-v4-compiled": _model_step("inception-v4-compiled", "inception_v4", compile=True, peers=("timm",)),
    "photos": _photos_step,
    "serve": _serve_step,
    "googlenet-cudagraphs": _model_step("googlenet-cudagraphs", "googlenet", compile=True, mode="reduce-overhead"),
    "onnxruntime": _ort_step,
}


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``timeout``, a job scheduler) raises KeyboardInterrupt while the report runs, so
    the running step's process group is killed and the rows measured so far stay written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def gpu_report(*, device: str = "auto", quick: bool = False, data: str | Path | None = None,
               cifar: str | Path | None = None, workers: int | None = None, budget: float | None = None,
               only: list[str] | None = None, output: str | Path | None = None,
               json_path: str | Path | None = None, log_dir: str | Path | None = None) -> Report:
    """Run the steps of :data:`STEPS` (``only``: those keys) on ``device`` (the CPU smoke form
    without CUDA) within ``budget`` seconds (default 8 minutes on a GPU) and return the
    :class:`Report`; with ``output`` / ``json_path``, its Markdown / JSON are written there after
    every step.

    ``data``: a folder dataset or an archive of class folders whose photos the end-to-end step
    copies; ``cifar``: CIFAR-10 for the recipe step (both default to ``data/``, then
    beside the checkout, see the module doc). ``workers``: DataLoader workers (16; 2 on a CPU).
    ``log_dir``: keep each step's output there (``STEP.log``; default: dropped with the
    temporary folder)."""
    dev = resolve_device(device)
    plan = Plan.for_device(dev, quick=quick, workers=workers)
    unknown = sorted(set(only or ()) - set(STEP_KEYS))
    if unknown:
        raise UserError(f"gpu-report step(s) {', '.join(unknown)} not known; choose from {', '.join(STEP_KEYS)}")
    if budget is None:
        budget = 480.0 if not plan.smoke else 1800.0
    if budget <= 0:
        raise UserError(f"--budget must be positive, got {budget}")
    image_source = _find(data, IMAGE_ARCHIVES)
    cifar_source = _find(cifar, (CIFAR_ARCHIVE,))
    began = time.perf_counter()
    command = "inception bench gpu-report" + "".join(
        f" {flag} {value}" for flag, value in (("--device", device), ("--data", data), ("--cifar", cifar),
                                               ("--workers", workers), ("--budget", budget if budget != 480 else None),
                                               ("--output", output), ("--json", json_path)) if value is not None)
    command += (" --only " + " ".join(only) if only else "") + (" --quick" if quick else "")
    report = Report(date=datetime.date.today().isoformat(), device=device_label(dev), versions=_versions(),
                    smoke=plan.smoke, quick=quick, budget_s=budget, rows=[], command=command)

    def save() -> None:
        report.seconds = time.perf_counter() - began
        if output is not None:
            atomic_write_text(output, report.to_markdown())
        if json_path is not None:
            atomic_write_text(json_path, json.dumps(report.to_dict(), indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="inception-gpu-report-") as tmp, _terminate_as_interrupt():
        workdir = Path(tmp)
        logs = Path(log_dir) if log_dir is not None else workdir
        logs.mkdir(parents=True, exist_ok=True)
        ctx = _Context(plan, dev, workdir, image_source, _cifar_data(cifar_source, plan, workdir), cifar_source,
                       deadline=began + budget, log_dir=logs)
        keys = [k for k in STEP_KEYS if not only or k in only]
        for i, key in enumerate(keys):
            row = Row(key, dict(STEPS)[key])
            log.info("gpu report: step %d of %d, %s", i + 1, len(keys), row.step)
            start = time.perf_counter()
            if ctx.deadline - start < MIN_STEP_S:
                row.figures = f"skipped: the report's {_duration(budget)} budget was spent"
            else:
                try:
                    RUNNERS[key](ctx, row)
                except Exception as e:    # one failed step (a missing library, bad data...) leaves the others to run
                    log.warning("gpu report: %s failed", row.step, exc_info=not isinstance(e, UserError))
                    row.figures = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            row.seconds = time.perf_counter() - start
            report.rows.append(row)
            save()
    report.finished = True
    save()
    return report
