"""Seeing what a run did: training curves (``inception plot``), a per-class evaluation report
(``inception eval --report``) and a table of runs (``inception runs``)."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from pathlib import Path

import numpy as np

from .errors import UserError
from .utils import atomic_write_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")          # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``RUN/metrics.jsonl`` (a torn last line, from a killed run, is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory (no metrics.jsonl); give a directory `inception train` "
                        "wrote, e.g. runs/<name>")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


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


# --------------------------------------------------------------------------------------
# inception runs

def run_info(run: Path) -> dict:
    """What ``inception runs`` shows for one run directory."""
    import yaml

    info = {"run": str(run), "model": "?", "dataset": "?", "epochs_done": 0, "epochs": None, "best_top1": None,
            "status": "unknown"}
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        info.update(model=cfg.get("model", {}).get("name", "?"), dataset=cfg.get("data", {}).get("dataset", "?"),
                    epochs=cfg.get("train", {}).get("epochs"))
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    records = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if epochs:
        info["epochs_done"] = max(r["epoch"] for r in epochs)
    tops = [r["val_top1"] for r in records if "val_top1" in r]
    if tops:
        info["best_top1"] = max(tops)
    status = {}
    try:
        status = json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        pass
    state = status.get("status")
    if state == "running":
        alive = status.get("host") != socket.gethostname() or _pid_alive(status.get("pid"))
        state = "running" if alive else "failed (killed)"
    elif state == "stopped":
        state = f"interrupted ({status.get('reason', 'signal')})"
    elif state is None:
        done = info["epochs"] is not None and info["epochs_done"] >= info["epochs"]
        state = "finished" if done else "interrupted"
    info["status"] = state
    if status.get("error"):
        info["error"] = status["error"]
    info["updated"] = (run / "metrics.jsonl").stat().st_mtime if (run / "metrics.jsonl").is_file() else None
    return info


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    try:          # a zombie (killed, not yet reaped) is not running
        return Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def list_runs(root: str | Path) -> list[dict]:
    """Every run directory under ``root`` (``root`` itself, its children, or grandchildren:
    any folder with a ``config.yaml`` and ``metrics.jsonl``), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"'{root}' does not exist; give the folder that holds your runs (e.g. runs)")
    found = [p.parent for p in sorted(root.glob("**/metrics.jsonl")) if (p.parent / "config.yaml").is_file()
             and len(p.parent.relative_to(root).parts) <= 3]
    infos = [run_info(r) for r in found]
    return sorted(infos, key=lambda i: i["updated"] or 0, reverse=True)


def format_runs(infos: list[dict]) -> list[str]:
    if not infos:
        return ["no runs found"]
    rows = [("run", "model", "dataset", "epochs", "best top-1", "status", "updated")]
    for i in infos:
        epochs = f"{i['epochs_done']}/{i['epochs']}" if i["epochs"] else str(i["epochs_done"])
        best = f"{i['best_top1']:.2f}%" if i["best_top1"] is not None else "-"
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(i["updated"])) if i["updated"] else "-"
        rows.append((i["run"], i["model"], i["dataset"], epochs, best, i["status"], updated))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
