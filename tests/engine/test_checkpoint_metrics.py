"""Checkpoint files (atomic, pruned, last/best) and metrics (top-k by hand)."""

import os

import pytest
import torch

from inception.engine.checkpoint import CheckpointManager, load_checkpoint, resolve_checkpoint, save_file
from inception.engine.evaluate import evaluate
from inception.engine.metrics import MetricsLog, topk_correct
from inception.errors import CheckpointError
from inception.models.pretrained import CHECKPOINT_FORMAT


def test_topk_on_hand_made_example():
    logits = torch.tensor([
        [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],   # target 1: top-1 hit
        [0.5, 0.1, 0.4, 0.0, 0.0, 0.0],   # target 2: second best -> top-5 hit only
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],   # target 0: worst of 6 -> miss in top-5
        [0.3, 0.2, 0.1, 0.6, 0.0, 0.0],   # target 3: top-1 hit
    ])
    target = torch.tensor([1, 2, 0, 3])
    top1, top5 = topk_correct(logits, target)
    assert int(top1) == 2 and int(top5) == 3
    (top3,) = topk_correct(logits, target, (3,))
    assert int(top3) == 3
    # fewer classes than k: every sample counts for top-5
    assert int(topk_correct(logits[:, :3], torch.tensor([1, 2, 0, 0]))[1]) == 4


def test_evaluate_counts_and_loss():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    logits = torch.eye(4)[[0, 1, 2, 2, 3]] * 5
    target = torch.tensor([0, 1, 2, 3, 3])
    loader = [(logits[:3], target[:3]), (logits[3:], target[3:])]
    r = evaluate(Fixed(), loader, torch.device("cpu"))
    assert r["count"] == 5 and r["top1"] == pytest.approx(80.0) and r["top5"] == 100.0
    expected = torch.nn.functional.cross_entropy(logits, target).item()
    assert r["loss"] == pytest.approx(expected, rel=1e-6)


def _state(i):
    return {"format": CHECKPOINT_FORMAT, "model": {"w": torch.full((2,), float(i))}, "step": i}


def test_manager_keeps_newest_and_links_last_best(tmp_path):
    m = CheckpointManager(tmp_path, keep_max=2)
    for step in (10, 20, 30):
        m.save(_state(step), step, best=(step == 20))
    assert [p.name for p in m.periodic()] == ["step_00000020.pt", "step_00000030.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 30
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 20
    m.save(_state(40), 40)
    # best survives the pruning of its periodic file
    assert not (tmp_path / "checkpoints" / "step_00000020.pt").exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 20
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_file(_state(1), path)

    def boom(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_file(_state(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "ck.pt.sha256"]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError,
                       match="not an inception checkpoint; for torchvision/timm weights use --pretrained"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="without checkpoints/last.pt"):
        resolve_checkpoint(tmp_path)


def test_metrics_log_appends_json_lines(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"kind": "step", "loss": 1.5})
    log.write({"kind": "epoch", "val_top1": 50.0})
    rows = log.read()
    assert [r["kind"] for r in rows] == ["step", "epoch"] and rows[0]["loss"] == 1.5 and "time" in rows[0]
