"""torch.distributed helpers: set-up from torchrun's environment, reductions, the launcher.

Data-parallel training runs one process per device, started by ``torchrun`` (or by
``inception train --nproc N``, which starts torchrun on this node). Every process runs the
same loop; DDP averages gradients; rank 0 alone logs, writes metrics and saves checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .. import accel
from ..errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from torchrun's environment (1 process without it)."""
    try:
        return DistInfo(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                        local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (NCCL on CUDA, HCCL on Ascend NPUs, gloo on
    CPUs: :func:`~inception.accel.dist_backend`) and pick this process's device
    (``cuda:LOCAL_RANK``, ``npu:LOCAL_RANK`` on accelerators)."""
    info = env_info()
    if not info.enabled:
        return info, device
    if accel.is_discrete(device):
        device = torch.device(device.type, info.local_rank)
        accel.set_device(device)
    if not dist.is_initialized():
        backend = accel.dist_backend(device)
        kwargs: dict = {}
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # Under torchrun the agent hosts the store and outlives restarts, so the keys of
            # the processes it restarted are still there: every start of the job gets a key
            # prefix of its own (gloo would otherwise connect to the dead processes' addresses).
            base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world_size,
                                 is_master=False, timeout=timedelta(minutes=10))
            start = agree_on_start(base, info.rank, info.world_size)
            kwargs = {"store": dist.PrefixStore(f"inception/start_{start}", base), "rank": info.rank,
                      "world_size": info.world_size}
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30),
                                device_id=device if backend != "gloo" else None, **kwargs)
    return info, device


_HEARTBEAT_S = 0.1


def agree_on_start(store: dist.Store, rank: int, world_size: int,
                   timeout: timedelta = timedelta(minutes=10)) -> str:
    """A name that every process of this start of a torchrun job agrees on, read from a store
    that may still hold the keys of earlier starts.

    ``TORCHELASTIC_RESTART_COUNT`` cannot name the start: each node's agent counts only its
    own failures, so after a rank dies its node restarts with count 1 while the other node,
    restarted as a membership change, keeps 0 (pytorch/pytorch#108158, #135712). Processes
    that prefixed their keys with it waited for each other under different names for ever.

    Instead, every rank but 0 writes ``hello/RANK`` = ``NONCE:N`` again every 0.1 s until
    rank 0 answers under ``ack/NONCE``. A key left by a dead process never changes, so rank 0
    answers a rank only once its key has changed under its eyes (a live process), and answers
    it with its own nonce, the name of this start. Every process of an earlier start is dead
    before torchrun starts the next one (each agent stops its workers before it joins the new
    rendezvous round), so nothing else writes these keys."""
    me = uuid.uuid4().hex
    deadline = time.monotonic() + timeout.total_seconds()
    if rank != 0:
        ack = f"inception/ack/{me}"
        beat = 0
        while True:
            store.set(f"inception/hello/{rank}", f"{me}:{beat}")
            if store.check([ack]):
                return store.get(ack).decode()
            if time.monotonic() > deadline:
                raise RuntimeError(f"rank {rank}: rank 0 did not answer within {timeout} (is rank 0 running?)")
            beat += 1
            time.sleep(_HEARTBEAT_S)
    keys = {r: f"inception/hello/{r}" for r in range(1, world_size)}
    seen: dict[int, bytes | None] = {r: (store.get(k) if store.check([k]) else None) for r, k in keys.items()}
    while seen:
        pending = [keys[r] for r in seen]     # one round trip when every key is there (after the first start)
        ranks = list(seen) if store.check(pending) else [r for r in seen if store.check([keys[r]])]
        for r, value in zip(ranks, store.multi_get([keys[r] for r in ranks]) if ranks else []):
            if value != seen[r]:                  # written since rank 0 first looked: alive
                store.set(f"inception/ack/{value.decode().split(':')[0]}", me)
                del seen[r]
        if seen and time.monotonic() > deadline:
            raise RuntimeError(f"rank 0: ranks {sorted(seen)} did not join within {timeout}")
        if seen:
            time.sleep(_HEARTBEAT_S / 2)
    return me


def check_sync_bn(device: torch.device) -> None:
    """``train.sync_bn`` needs accelerators with devices of their own (PyTorch's SyncBatchNorm
    runs on CUDA, NPUs, XPUs...)."""
    if not accel.is_discrete(device):
        raise UserError("train.sync_bn needs CUDA or NPU devices (PyTorch synchronises BatchNorm only on "
                        "accelerators); set train.sync_bn: false on CPU")


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum tensors across processes in place (a no-op in one process)."""
    if is_enabled():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers (BatchNorm running statistics)."""
    if is_enabled():
        for buf in module.buffers():
            dist.broadcast(buf, src)


def gather_objects(items: list) -> list:
    """Every process's ``items`` concatenated (rank order), on every process."""
    if not is_enabled():
        return list(items)
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def launch_torchrun(nproc: int, argv: list[str], max_restarts: int = 0) -> int:
    """Run ``inception <argv>`` under torchrun with ``nproc`` processes on this node; with
    ``max_restarts``, torchrun restarts all of them when one dies (they resume from the run's
    newest checkpoint)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--max-restarts={max_restarts}", "-m", "inception", *argv]
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr)
    env = dict(os.environ)
    if sys.platform.startswith("linux"):
        # One node: gloo (CPU) on the loopback interface. Without it gloo picks the interface
        # the hostname resolves to, and re-connecting after an elastic restart can hang there.
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return subprocess.call(cmd, env=env)
