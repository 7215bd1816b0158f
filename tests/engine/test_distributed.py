"""Data-parallel training and evaluation with 2 CPU processes (gloo)."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from inception.config import load_config
from inception.data.sampling import ShardSampler
from inception.engine import distributed as dist_utils
from inception.engine.checkpoint import load_checkpoint
from inception.engine.evaluate import evaluate
from inception.engine.loop import train
from inception.models import ModelCard, register_model
from inception.models.layers import DataConfig, InceptionBase


class TinyNet(InceptionBase):
    """A BatchNorm-free model, so per-process batches give exactly the full batch's gradients."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 16
        self._data_config = DATA
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Identity()
        self.fc = self._make_classifier(num_classes)

    def forward_features(self, x):
        return self.stem(x)


DATA = DataConfig(input_size=(3, 16, 16), min_input_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)


def _register():
    register_model(ModelCard(name="tinynet", builder=TinyNet, description="test-only BN-free model",
                             origin="the tests", data_config=DATA, params=19_768, macs=274_048, num_features=16,
                             init="PyTorch's default"))


@pytest.fixture
def tinynet():
    _register()
    yield
    from inception.models import registry

    registry.unregister_model("tinynet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _overrides(out_dir, batch):
    return {"model.name": "tinynet", "data.image_size": 16, "data.augment": "none", "data.workers": 0,
            "train.epochs": 1, "train.batch_size": batch, "train.log_interval": 5, "optim.lr": 0.05,
            "optim.weight_decay": 1e-4, "schedule.warmup_epochs": 0.2, "train.output_dir": str(out_dir),
            # fp32: one process and two agree to fp32 rounding only when both sum in fp32 (bf16 autocast, the
            # default on CPUs with native bf16, rounds each half-batch's activations differently)
            "train.precision": "fp32"}


def _train_worker(rank, world, port, out_dir, batch, device_resident, queue):
    torch.set_num_threads(1)
    _env(rank, world, port)
    _register()
    cfg = load_config(None, {**_overrides(out_dir, batch), "data.device_resident": device_resident})
    result = train(cfg, progress=False)
    queue.put((rank, result.global_step, result.last_metrics.get("val_count")))


@pytest.mark.parametrize("device_resident", [False, True], ids=["dataloader", "device-resident"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, device_resident, tinynet):
    torch.set_num_threads(1)
    single = train(load_config(None, {**_overrides(tmp_path / "one", 64), "data.device_resident": device_resident}),
                   progress=False)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_train_worker, args=(r, 2, port, tmp_path / "two", 32, device_resident, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs)
    reports = sorted(queue.get(timeout=5) for _ in range(2))
    assert [r[1] for r in reports] == [single.global_step] * 2          # all ranks agree on the steps
    assert reports[0][2] == reports[1][2] == single.last_metrics["val_count"] == 360
    # Only rank 0 wrote the run directory.
    assert (tmp_path / "two" / "checkpoints" / "last.pt").is_file()
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
    changed = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert changed["global_step"] == single.global_step


def _eval_worker(rank, world, port, n, queue):
    torch.set_num_threads(1)
    _env(rank, world, port)
    torch.distributed.init_process_group("gloo")
    torch.manual_seed(0)
    x, y = torch.randn(n, 6), torch.randint(0, 4, (n,))
    model = nn.Linear(6, 4)
    idx = list(ShardSampler(n, rank, world))
    loader = [(x[idx[i:i + 4]], y[idx[i:i + 4]]) for i in range(0, len(idx), 4)]
    result = evaluate(model, loader, torch.device("cpu"))
    torch.distributed.destroy_process_group()
    queue.put((rank, result))


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_eval_counts_are_exact(world):
    n = 23  # not divisible by 2 or 3
    torch.manual_seed(0)
    x, y = torch.randn(n, 6), torch.randint(0, 4, (n,))
    model = nn.Linear(6, 4)
    expected = evaluate(model, [(x, y)], torch.device("cpu"))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_eval_worker, args=(r, world, port, n, queue)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    for _, result in (queue.get(timeout=5) for _ in range(world)):
        assert result["count"] == n
        assert result["top1"] == pytest.approx(expected["top1"])
        assert result["top5"] == pytest.approx(expected["top5"])
        assert result["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_shard_sampler_partitions_without_duplicates():
    for n, world in ((10, 3), (7, 2), (2, 4)):
        shards = [list(ShardSampler(n, r, world)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_nproc_launcher_runs_torchrun(tmp_path):
    """`inception train --nproc 2` starts torchrun; rank 0 alone prints and writes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "inception", "train", "--nproc", "2", "--epochs", "1", "--batch-size", "32",
           "--workers", "0", "--output-dir", str(out), "--set", "data.image_size=16", "--set", "train.threads=1",
           "--set", "train.log_interval=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best val top-1") == 1
    assert "x2" in (out / "train.log").read_text()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["metrics"]["val_count"] == 360


def test_env_info_defaults_to_one_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = dist_utils.env_info()
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    cmd = [sys.executable, "-m", "inception", "train", "--nproc", "2", "--epochs", "1", "--batch-size", "32",
           "--workers", "0", "--output-dir", str(tmp_path / "run"), "--set", "data.image_size=16",
           "--set", "train.sync_bn=true", "--set", "train.threads=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "train.sync_bn needs CUDA or NPU devices" in done.stderr


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_sync_bn_two_gpus(tmp_path):
    cmd = [sys.executable, "-m", "inception", "train", "--nproc", "2", "--epochs", "1", "--batch-size", "32",
           "--output-dir", str(tmp_path / "run"), "--set", "data.image_size=32", "--set", "train.sync_bn=true"]
    assert subprocess.run(cmd, timeout=600).returncode == 0


def _store_clients(n: int):
    from datetime import timedelta

    import torch.distributed as dist

    port = _free_port()
    master = dist.TCPStore("127.0.0.1", port, None, is_master=True, timeout=timedelta(seconds=30),
                           wait_for_workers=False)
    return master, [dist.TCPStore("127.0.0.1", port, None, is_master=False, timeout=timedelta(seconds=30))
                    for _ in range(n)]


def test_the_start_name_ignores_keys_left_by_dead_processes():
    """Rank 0 answers only ranks whose hello key changes while it watches: the hellos an earlier
    start left behind (never changing) are not answered, and every live rank gets rank 0's name."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    master, clients = _store_clients(3)
    master.set("inception/hello/1", "dead-one:7")
    master.set("inception/hello/2", "dead-two:3")
    with ThreadPoolExecutor(3) as pool:
        names = list(pool.map(lambda r: dist_utils.agree_on_start(clients[r], r, 3, timedelta(seconds=20)), range(3)))
    assert len(set(names)) == 1 and len(names[0]) == 32, names
    assert not master.check(["inception/ack/dead-one"]) and not master.check(["inception/ack/dead-two"])


def test_a_rank_alone_times_out_with_a_message():
    from datetime import timedelta

    master, (rank1,) = _store_clients(1)
    with pytest.raises(RuntimeError, match="rank 0 did not answer"):
        dist_utils.agree_on_start(rank1, 1, 2, timedelta(seconds=0.5))
    with pytest.raises(RuntimeError, match=r"ranks \[1\] did not join"):
        dist_utils.agree_on_start(master, 0, 2, timedelta(seconds=0.5))


_JOIN = """
import sys, torch, torch.distributed as dist
from inception.engine.distributed import init_distributed
info, _ = init_distributed(torch.device("cpu"))
t = torch.tensor([float(info.rank + 1)])
dist.all_reduce(t)
print("sum", int(t.item()))
dist.destroy_process_group()
"""


def test_restarted_processes_join_though_their_restart_counts_differ(tmp_path):
    """What torchrun does on two nodes when a rank dies: the store the agent hosts outlives the
    processes, and the restarted ones get TORCHELASTIC_RESTART_COUNT 1 on the failed node but 0
    on the other (restarted as a membership change). They must still form their group, not wait
    for each other under different key prefixes or connect to the dead processes' addresses
    (the hang CI saw on 2026-12-05 and 2026-12-07)."""
    from datetime import timedelta

    import torch.distributed as dist

    port = _free_port()
    agent_store = dist.TCPStore("127.0.0.1", port, None, is_master=True, timeout=timedelta(seconds=60),
                               wait_for_workers=False)
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "TORCHELASTIC_USE_AGENT_STORE": "True", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}

    def start(counts):
        procs = [subprocess.Popen([sys.executable, "-c", _JOIN], text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT,
                                  env={**env, "RANK": str(r), "LOCAL_RANK": "0", "TORCHELASTIC_RESTART_COUNT": c})
                 for r, c in enumerate(counts)]
        try:
            outs = [p.communicate(timeout=90)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        for p, out in zip(procs, outs):
            assert p.returncode == 0 and "sum 3" in out, out[-3000:]

    start(["0", "0"])           # the first start: its keys stay in the agent's store
    start(["0", "1"])           # rank 1's node counted a failure, rank 0's a membership change
    start(["1", "1"])
    del agent_store
