"""Seeing what a run did: training curves (``inception plot``) and a per-class evaluation
report (``inception eval --report``). The table of runs (``inception runs``) is in :mod:`.runs`."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from .errors import UserError
from .runs import read_metrics
from .utils import atomic_write_text


def _pyplot():
    import matplotlib  # noqa: PLC0415 - slow to import; only plots need it

    matplotlib.use("Agg")          # files only, no display needed
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after the backend is chosen

    return plt


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def plot_runs(run_dirs: list[str | Path], output: str | Path | None = None) -> Path:
    """One PNG with four panels (training loss, learning rate, val top-1/top-5, img/s)
    against the global step; several runs are overlaid, labelled by their folder names.
    Default output: ``RUN/curves.png`` for one run, ``curves.png`` for several."""
    if not run_dirs:
        raise UserError("name at least one run directory")
    runs = [(Path(d), read_metrics(d)) for d in run_dirs]
    out = Path(output) if output else (runs[0][0] / "curves.png" if len(runs) == 1 else Path("curves.png"))
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    (ax_loss, ax_lr), (ax_acc, ax_ips) = axes
    for run, records in runs:
        steps = [r for r in records if r.get("kind") == "step"]
        epochs = [r for r in records if r.get("kind") == "epoch"]
        label = run.name
        if steps:
            x = [r["step"] for r in steps]
            line, = ax_loss.plot(x, [r["loss"] for r in steps], label=label, lw=1)
            ax_lr.plot(x, [r["lr"] for r in steps], color=line.get_color(), label=label)
            ax_ips.plot(x, [r["img_per_s"] for r in steps], color=line.get_color(), label=label, lw=1)
            color = line.get_color()
        else:
            color = None
        val = [r for r in epochs if "val_top1" in r]
        if val:
            x = [r["step"] for r in val]
            l1, = ax_acc.plot(x, [r["val_top1"] for r in val], marker="o", ms=3, color=color, label=f"{label} top-1")
            ax_acc.plot(x, [r["val_top5"] for r in val], ls="--", color=l1.get_color(), label=f"{label} top-5")
        if epochs:
            ax_loss.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], ls="", marker="s", ms=3,
                         color=color)
    for ax, title, ylabel in ((ax_loss, "training loss (squares: epoch means)", "loss"),
                              (ax_lr, "learning rate", "lr"), (ax_acc, "validation accuracy", "%"),
                              (ax_ips, "throughput", "img/s")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, out)
    plt.close(fig)
    return out


def write_eval_report(result: dict, confusion: np.ndarray, class_names: list[str], out_dir: str | Path) -> list[str]:
    """``out_dir/confusion.png``, ``per_class.csv`` (and ``report.json``) for an evaluation;
    returns the printed table's lines (per class: images, correct, accuracy, most confused with)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the report folder '{out}' ({e.strerror}); choose another --report") from None
    n = confusion.sum(1)
    correct = np.diag(confusion)
    rows = []
    for i, name in enumerate(class_names):
        off = confusion[i].copy()
        off[i] = 0
        worst = int(off.argmax()) if off.sum() else None
        rows.append({"class": name, "images": int(n[i]), "correct": int(correct[i]),
                     "accuracy": 100.0 * correct[i] / n[i] if n[i] else float("nan"),
                     "most_confused_with": class_names[worst] if worst is not None else "",
                     "confused_count": int(off[worst]) if worst is not None else 0})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "accuracy": f"{row['accuracy']:.2f}"})
    atomic_write_text(out / "per_class.csv", buf.getvalue())
    atomic_write_text(out / "report.json", json.dumps({**result, "classes": rows,
                                                       "confusion": confusion.tolist()}, indent=1) + "\n")
    plt = _pyplot()
    k = len(class_names)
    side = min(4 + 0.35 * k, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    norm = confusion / np.maximum(n[:, None], 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion (row-normalised), top-1 {result['top1']:.2f}%")
    if k <= 40:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if confusion[i, j]:
                        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save_png(fig, out / "confusion.png")
    plt.close(fig)
    width = max(len("class"), *(len(r["class"]) for r in rows))
    lines = [f"{'class':<{width}}  {'images':>7}  {'correct':>7}  {'top-1':>7}  most confused with"]
    for r in rows:
        confused = f"{r['most_confused_with']} ({r['confused_count']})" if r["confused_count"] else "-"
        lines.append(f"{r['class']:<{width}}  {r['images']:>7}  {r['correct']:>7}  {r['accuracy']:>6.2f}%  {confused}")
    lines.append(f"wrote {out / 'confusion.png'}, {out / 'per_class.csv'} and {out / 'report.json'}")
    return lines
