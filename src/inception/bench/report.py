"""``inception bench gpu-report``: every GPU figure the README promises, in one run, as one
Markdown table ready to paste into the README.

The steps (:data:`STEPS`), each a row of the table with the command that reproduces it:

1. GoogLeNet training at 224, bf16: img/s, ms/step, MFU, peak memory (eager, then with
   ``torch.compile``);
2. Inception v4 training at 299, bf16 (eager, then compiled);
3. the input pipeline at 224 with 16 workers against the torchvision baseline, then with the
   JPEGs decoded on the GPU, each set against GoogLeNet's training img/s (input- or
   compute-bound);
4. ONNX Runtime's CUDA provider against PyTorch eager, inference at batch 1 and 64 (a note
   when onnxruntime has no CUDAExecutionProvider);
5. the fast CIFAR-10 recipe (``googlenet_cifar10_fast``) trained to its accuracy, with its
   wall time.

It is sized to finish in under 30 minutes on one H100 (the CIFAR recipe, at most 10 of them
by its target, and two compilations take most of it; ``quick=True``: fewer timed steps and
rounds, and 5 epochs of the CIFAR recipe). Without CUDA the same steps run in a tiny form
(small images, a few steps, 2 workers, fp32, no compilation, a few images of each dataset,
the CIFAR recipe for one short epoch), so the code paths are checked in well under a minute
on a CPU; the table then says that its figures are CPU smoke figures, not GPU ones.

The image data are a folder dataset (``data``), or the train split of an archive of class
folders, extracted to a temporary folder (default ``../shared/data/imagenette-160.tar.gz``,
else ``imagewoof-sample.tar.gz``); the CIFAR-10 data are ``cifar`` (default
``../shared/data/cifar10-jpg.tar.gz``). A step whose data are missing, or that fails, says so in its
row and the others still run.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import torch
import torchvision

from .. import __version__
from ..accel import resolve_device
from ..config import load_config
from ..data.archive import is_archive
from ..data.folder import is_image_file
from ..engine.loop import train
from ..errors import UserError
from ..utils import atomic_write_text
from .common import device_label
from .data import bench_pipeline, data_verdict
from .model import BenchResult, bench_model
from .runtime import bench_runtimes, ort_providers, ort_version

log = logging.getLogger("inception")

SHARED_DATA = Path("..") / "shared" / "data"
IMAGE_ARCHIVES = ("imagenette-160.tar.gz", "imagewoof-sample.tar.gz")
CIFAR_ARCHIVE = "cifar10-jpg.tar.gz"
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "googlenet_cifar10_fast.yaml"

#: The table's rows, in order (the ``step`` column).
STEPS = ("GoogLeNet training", "GoogLeNet training, torch.compile", "Inception v4 training",
         "Inception v4 training, torch.compile", "input pipeline vs torchvision", "input pipeline, GPU decode",
         "ONNX Runtime CUDA inference", "CIFAR-10 fast recipe")

# The README's targets on one H100 (checked in the full GPU report only).
TARGETS = {"googlenet": 12_000.0, "inception_v4": 2_000.0, "cifar_top1": 93.4, "cifar_minutes": 10.0}


@dataclass(frozen=True)
class Plan:
    """The sizes of one report: the GPU one, its quick form, or the CPU smoke one."""

    smoke: bool
    precision: str
    googlenet: tuple[int, int]      # (image size, batch)
    inception_v4: tuple[int, int]
    steps: int
    warmup: int
    compile: bool
    pipeline_size: int
    pipeline_batch: int
    workers: int
    rounds: int
    pipeline_steps: int
    ort_batches: tuple[int, ...]
    ort_steps: int
    per_class: int | None           # images per class taken from the image data (None: all)
    cifar_overrides: dict = field(default_factory=dict)
    cifar_per_class: tuple[int, int] | None = None   # (train, test) images per class (None: all)

    @classmethod
    def for_device(cls, device: torch.device, *, quick: bool = False, workers: int | None = None) -> "Plan":
        """The GPU plan on CUDA (``quick``: its short form), else the CPU smoke plan (its steps,
        ONNX Runtime's CUDA provider and the bf16/compile settings, are CUDA's; elsewhere,
        an NPU included, ``inception bench model`` measures the device)."""
        if device.type != "cuda":
            return cls(smoke=True, precision="fp32", googlenet=(64, 8), inception_v4=(75, 2), steps=3, warmup=1,
                       compile=False, pipeline_size=64, pipeline_batch=8, workers=2 if workers is None else workers,
                       rounds=2, pipeline_steps=4, ort_batches=(1, 8), ort_steps=3, per_class=12,
                       cifar_overrides={"data.image_size": 16, "train.epochs": 1, "train.batch_size": 16,
                                        "optim.lr": 0.0125, "train.precision": "fp32",
                                        "schedule.warmup_epochs": 0, "train.log_interval": 1},
                       cifar_per_class=(8, 2))
        return cls(smoke=False, precision="bf16", googlenet=(224, 256), inception_v4=(299, 128),
                   steps=15 if quick else 50, warmup=5 if quick else 10, compile=True, pipeline_size=224,
                   pipeline_batch=256, workers=16 if workers is None else workers, rounds=2 if quick else 5,
                   pipeline_steps=30, ort_batches=(1, 64), ort_steps=10 if quick else 30, per_class=None,
                   cifar_overrides={"train.epochs": 5} if quick else {})


@dataclass
class Row:
    step: str
    command: str
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
    rows: list[Row]
    command: str = "inception bench gpu-report"
    seconds: float = 0.0

    def to_markdown(self) -> str:
        kind = ("CPU smoke figures (no CUDA device: tiny sizes, a few steps, fp32, no compilation; they check the "
                "steps run, they are not GPU figures)" if self.smoke else
                "quick run (fewer steps, CIFAR recipe shortened)" if self.quick else "full run")
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        lines = [f"**GPU report** {self.date}, {self.device}; {versions}; {kind}; "
                 f"{_duration(self.seconds)} in all (`{self.command}`).", "",
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


def _versions() -> dict:
    return {"inception": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnxruntime": ort_version()}


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
                    copy(parts[-3], parts[-2], parts[-1], lambda m=m: tar.extractfile(m))
    if not any(split == "train" for split, _ in taken):
        raise UserError(f"'{source}' has no train/<class>/<image> files; give a folder dataset or a .tar.gz of "
                        "class folders")
    return root


def _candidates(name: str) -> tuple[Path, ...]:
    """``../shared/data/NAME`` from the working directory, and next to this checkout."""
    return SHARED_DATA / name, (Path(__file__).resolve().parents[3] / SHARED_DATA / name).resolve()


def _find(given: str | Path | None, names: tuple[str, ...]) -> Path | None:
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise UserError(f"'{path}' does not exist; give a folder dataset or a .tar.gz of class folders")
        return path
    return next((p for name in names for p in _candidates(name) if p.exists()), None)


def _image_data(source: Path | None, plan: Plan, workdir: Path) -> tuple[Path | None, str]:
    """The folder dataset the pipeline steps read (None: no data), and the command line that
    reads it (``tar xzf ARCHIVE && inception bench data FOLDER`` for an archive)."""
    if source is None:
        return None, "inception bench data DIR"
    if source.is_dir() and plan.per_class is None:
        return source, f"inception bench data {source}"
    if source.is_file() and not is_archive(source):
        raise UserError(f"'{source}' is neither a folder dataset nor a .tar/.tar.gz archive of class folders")
    log.info("gpu report: reading the train split of %s%s", source,
             f" ({plan.per_class} images per class)" if plan.per_class else "")
    # Only train is timed; a few val images let the datasets check the classes, as in training.
    root = extract_splits(source, workdir / "images", {"train": plan.per_class, "val": 2})
    if source.is_dir():
        return workdir / "images", f"inception bench data {source}"
    return workdir / "images", f"tar xzf {source} && inception bench data {root or '.'}"


def _cifar_data(source: Path | None, plan: Plan, workdir: Path) -> Path | None:
    """What ``data.data_dir`` of the CIFAR recipe reads: the archive or folder itself, or (CPU
    smoke) a few images of each class of it in ``train/`` and ``test/`` class folders."""
    if source is None or plan.cifar_per_class is None or (source.is_dir() and not (source / "train").is_dir()):
        return source       # (a folder without train/: the official binary/pickle files, read as they are)
    n_train, n_test = plan.cifar_per_class
    extract_splits(source, workdir / "cifar", {"train": n_train, "test": n_test, "val": n_test})
    return workdir / "cifar"


# --------------------------------------------------------------------------------------
# Steps

def _model_row(step: str, name: str, plan: Plan, device: torch.device, compile: bool) -> tuple[Row, Callable]:
    size, batch = getattr(plan, name)
    command = (f"inception bench model {name} --mode train --precision {plan.precision} --image-size {size} "
               f"--batch-size {batch} --steps {plan.steps} --warmup {plan.warmup} --device {device.type}"
               + (" --compile" if compile else ""))
    row = Row(step, command)

    def run() -> BenchResult | None:
        if compile and not plan.compile:
            row.figures = "skipped: no compilation in the CPU smoke run (inductor takes minutes on a CPU)"
            return None
        r = bench_model(name, mode="train", batch_size=batch, image_size=size, precision=plan.precision,
                        compile=compile, device=device, steps=plan.steps, warmup=plan.warmup)
        mfu = f"MFU {100 * r.mfu:.1f}% of {r.peak_tflops:g} TFLOPS" if r.mfu is not None else "MFU - (no known peak)"
        memory = f", peak {r.peak_mem_mb:,.0f} MB" if r.peak_mem_mb is not None else ""
        compiled = f", compile {r.compile_s:.0f} s" if r.compile_s is not None else ""
        row.figures = (f"**{_rate(r.img_per_s)} img/s**, {r.ms_per_step:.1f} ms/step, {r.achieved_tflops:.3g} TFLOPS, "
                       f"{mfu}{memory}{compiled}")
        if not plan.smoke:
            target = TARGETS[name]
            row.figures += f"; target >= {target:,.0f} img/s: {'met' if r.img_per_s >= target else 'not met'}"
        row.values = r.to_dict()
        return r
    return row, run


def _pipeline_row(step: str, data: Path | None, shown: str, plan: Plan, device: torch.device, gpu_decode: bool,
                  compute: Callable[[], BenchResult | None]) -> tuple[Row, Callable]:
    flags = " --gpu-decode --no-baseline" if gpu_decode else ""
    command = (f"{shown} --pipeline train --image-size {plan.pipeline_size} "
               f"--batch-size {plan.pipeline_batch} --workers {plan.workers} --rounds {plan.rounds} "
               f"--steps {plan.pipeline_steps} --device {device.type}{flags}")
    row = Row(step, command)

    def run() -> None:
        if data is None:
            row.figures = ("skipped: no image data (give --data PATH, a folder dataset or a .tar.gz of class "
                           f"folders; ../shared/data/{IMAGE_ARCHIVES[0]} was not found)")
            return
        r = bench_pipeline(data, pipeline="train", image_size=plan.pipeline_size, batch_size=plan.pipeline_batch,
                           workers=plan.workers, steps=plan.pipeline_steps, rounds=plan.rounds, device=str(device),
                           baseline=not gpu_decode, gpu_decode=gpu_decode)
        ours = r["inception"]
        text = f"**{_rate(ours['img_per_s'])} img/s** ({_rate(ours['img_per_s_per_worker'])} per worker)"
        if "ratio" in r:
            text += (f", **{r['ratio']:.2f}x** torchvision ImageFolder + PIL ({_rate(r['torchvision']['img_per_s'])} "
                     f"img/s); normalized on the device {_rate(r['inception+normalize']['img_per_s'])} img/s")
        model = compute()
        if model is not None:
            ratio, verdict = data_verdict(ours["img_per_s"], model.img_per_s)
            text += (f"; vs GoogLeNet training {_rate(model.img_per_s)} img/s at {model.image_size}: "
                     f"{ratio:.2f}x, {verdict}")
        row.figures = text + f"; {r['images']:,} images"
        row.values = r
    return row, run


def _ort_row(step: str, plan: Plan, device: torch.device) -> tuple[Row, Callable]:
    size = plan.googlenet[0]
    batches = " ".join(map(str, plan.ort_batches))
    command = (f"inception bench runtime googlenet --runtime torch onnxruntime --device cuda --image-size {size} "
               f"--batch-size {batches} --steps {plan.ort_steps}")
    row = Row(step, command)

    def run() -> None:
        providers = ort_providers()
        if "CUDAExecutionProvider" not in providers or device.type != "cuda":
            why = "no CUDA device" if device.type != "cuda" else "onnxruntime has no CUDAExecutionProvider"
            row.figures = (f"skipped: {why} (onnxruntime {ort_version()}, providers: {', '.join(providers)}); "
                           "install onnxruntime-gpu on a CUDA machine")
            return
        results = bench_runtimes(["googlenet"], runtimes=("torch", "onnxruntime"), batch_sizes=plan.ort_batches,
                                 image_size=size, steps=plan.ort_steps, warmup=3, device="cuda")
        parts = [f"batch {r.batch_size}: **{_rate(r.img_per_s)} img/s**, {r.ms_per_batch:.2f} ms, "
                 f"{r.ratio:.2f}x eager" for r in results if r.runtime == "onnxruntime"]
        eager = ", ".join(f"{_rate(r.img_per_s)}" for r in results if r.runtime == "torch eager")
        row.figures = "; ".join(parts) + f" (PyTorch eager fp32: {eager} img/s)"
        row.values = {"runtimes": [r.to_dict() for r in results]}
    return row, run


def _cifar_row(step: str, data: Path | None, source: Path | None, plan: Plan, device: torch.device,
               workdir: Path) -> tuple[Row, Callable]:
    sets = "".join(f" --set {k}={v}" for k, v in plan.cifar_overrides.items())
    command = f"inception train --config googlenet_cifar10_fast --data-dir {source or 'CIFAR'}{sets}"
    row = Row(step, command)

    def run() -> None:
        if data is None:
            row.figures = f"skipped: no CIFAR-10 data (give --cifar PATH; ../shared/data/{CIFAR_ARCHIVE} was not found)"
            return
        cfg = load_config(RECIPE, {**plan.cifar_overrides, "data.data_dir": str(data),
                                   "train.output_dir": str(workdir / "cifar-run"), "train.device": str(device)})
        start = time.perf_counter()
        result = train(cfg, progress=False, auto_resume=False)
        wall = time.perf_counter() - start
        top1 = result.last_metrics.get("val_top1", float("nan"))
        epochs = f"{result.epochs_done} epoch{'' if result.epochs_done == 1 else 's'}"
        text = (f"**top-1 {top1:.2f}%** (best {result.best_top1:.2f}%) after {epochs}, "
                f"**{_duration(wall)}** wall, {cfg.data.dataset} {cfg.data.image_size or 32}px, "
                f"batch {cfg.train.batch_size}, {cfg.train.precision}")
        if plan.smoke:
            text += f"; {result.global_step} steps on a few images of each class"
        elif cfg.train.epochs == 30:
            met = top1 >= TARGETS["cifar_top1"] and wall <= 60 * TARGETS["cifar_minutes"]
            text += f"; target >= {TARGETS['cifar_top1']}% within {TARGETS['cifar_minutes']:g} min: " \
                    f"{'met' if met else 'not met'}"
        row.figures = text
        row.values = {"val_top1": top1, "best_top1": result.best_top1, "epochs": result.epochs_done,
                      "steps": result.global_step, "wall_s": wall}
    return row, run


def gpu_report(*, device: str = "auto", quick: bool = False, data: str | Path | None = None,
               cifar: str | Path | None = None, workers: int | None = None,
               output: str | Path | None = None) -> Report:
    """Run every step of :data:`STEPS` on ``device`` (the CPU smoke form without CUDA) and
    return the :class:`Report`; with ``output``, also write its Markdown there.

    ``data``: a folder dataset or an archive of class folders for the input-pipeline steps;
    ``cifar``: CIFAR-10 for the recipe step (both default to ``../shared/data``, see the
    module doc). ``workers``: DataLoader workers of the pipeline steps (16; 2 on a CPU)."""
    dev = resolve_device(device)
    plan = Plan.for_device(dev, quick=quick, workers=workers)
    image_source = _find(data, IMAGE_ARCHIVES)
    cifar_source = _find(cifar, (CIFAR_ARCHIVE,))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inception-gpu-report-") as tmp:
        workdir = Path(tmp)
        images, shown = _image_data(image_source, plan, workdir)
        cifar_dir = _cifar_data(cifar_source, plan, workdir)
        googlenet: list[BenchResult] = []

        def googlenet_compute() -> BenchResult | None:   # the fastest GoogLeNet figure measured
            return max(googlenet, key=lambda r: r.img_per_s, default=None)

        steps = [_model_row(STEPS[0], "googlenet", plan, dev, compile=False),
                 _model_row(STEPS[1], "googlenet", plan, dev, compile=True),
                 _model_row(STEPS[2], "inception_v4", plan, dev, compile=False),
                 _model_row(STEPS[3], "inception_v4", plan, dev, compile=True),
                 _pipeline_row(STEPS[4], images, shown, plan, dev, False, googlenet_compute),
                 _pipeline_row(STEPS[5], images, shown, plan, dev, True, googlenet_compute),
                 _ort_row(STEPS[6], plan, dev),
                 _cifar_row(STEPS[7], cifar_dir, cifar_source, plan, dev, workdir)]
        rows = []
        for i, (row, run) in enumerate(steps):
            log.info("gpu report: step %d of %d, %s", i + 1, len(steps), row.step)
            start = time.perf_counter()
            try:
                out = run()
            except Exception as e:    # one failed step (out of memory, a compiler error...) leaves the others to run
                log.warning("gpu report: %s failed", row.step, exc_info=not isinstance(e, UserError))
                row.figures = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                out = None
            if isinstance(out, BenchResult) and out.model == "googlenet":
                googlenet.append(out)
            row.seconds = time.perf_counter() - start
            rows.append(row)
    command = "inception bench gpu-report" + "".join(
        f" {flag} {value}" for flag, value in (("--device", device), ("--data", data), ("--cifar", cifar),
                                               ("--workers", workers), ("--output", output)) if value is not None)
    report = Report(date=datetime.date.today().isoformat(), device=device_label(dev), versions=_versions(),
                    smoke=plan.smoke, quick=quick, rows=rows, command=command + (" --quick" if quick else ""),
                    seconds=time.perf_counter() - began)
    if output is not None:
        atomic_write_text(output, report.to_markdown())
    return report
