"""Run directories: the status a training run writes (``RUN/status.json``), its metrics
(``RUN/metrics.jsonl``) read back, and the table of runs ``inception runs`` prints."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import yaml

from .errors import UserError
from .utils import atomic_write_text

log = logging.getLogger("inception")


def write_status(run_dir: Path, status: str, **extra) -> None:
    """``RUN/status.json``: running (with this process's pid and host), finished, stopped
    (signal or time limit) or failed; ``inception runs`` reads it."""
    record = {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), **extra}
    try:
        atomic_write_text(Path(run_dir) / "status.json", json.dumps(record) + "\n")
    except OSError as e:           # never fail a run for its status file
        log.warning("could not write %s: %s", Path(run_dir) / "status.json", e)


def new_run_dir(model: str, dataset: str, root: str | Path = "runs") -> Path:
    """``runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>``: where a run without ``--output-dir`` goes."""
    return Path(root) / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir``, or say in one line why it cannot be written to."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory '{run_dir}' is not writable ({e.strerror}); choose another "
                        "--output-dir") from None


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


def run_info(run: Path) -> dict:
    """What ``inception runs`` shows for one run directory."""
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
    """The ``inception runs`` table: one line per run, columns padded to fit."""
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
