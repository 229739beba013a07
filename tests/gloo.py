"""Run a test's worker in two (or more) CPU processes joined in one gloo process group.

The distributed optimizer tests (DDP, FSDP2, H2SPG under DDP) all need the same scaffolding: a free
local port, one process per rank with a single torch thread (two ranks share a 2-core machine), the
group set up before the worker and torn down after it even when the worker fails. The worker saves
what it measured under ``out`` for the test to compare after ``spawn_gloo`` returns.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, worker: Callable[[int, int, str], None], world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        worker(rank, world, out)
    finally:
        dist.destroy_process_group()


def spawn_gloo(worker: Callable[[int, int, str], None], out: Path, world: int = 2) -> None:
    """``worker(rank, world, out)`` in ``world`` processes, inside the group; returns when all end.
    ``worker`` must be a module-level function (it is pickled into the spawned processes)."""
    mp.spawn(_rank_main, args=(worker, world, free_port(), str(out)), nprocs=world, join=True)
