"""Data-parallel runs under ``torchrun``: the rank, the process group, shards and sums across ranks.

``torchrun --nproc_per_node N -m wsssbench run ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init` joins them (NCCL on CUDA, gloo on CPU). Every
helper here is a no-op in a plain run (``WORLD_SIZE`` unset or 1), so single-process numbers and
speed do not change. Training wraps the model in ``DistributedDataParallel`` (:func:`ddp_step`);
inference is sharded by image (:func:`shard`) and additive state is summed (:func:`all_reduce_sum`).
Code that shards must run on every rank (a sum waits for all of them).
See docs/scale.md.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Sequence

_STATE: dict[str, Any] = {"initialised": False}


def world() -> int:
    """How many processes run this job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0")) if world() > 1 else 0


def local_rank() -> int:
    """This process's rank on its node: the CUDA device it uses."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world() > 1 else 0


def active() -> bool:
    return world() > 1


def is_main() -> bool:
    """Whether this process writes the shared outputs (records, figures, stage markers): rank 0."""
    return rank() == 0


def init(device: str) -> None:
    """Join the process group once (NCCL on ``cuda``, gloo on ``cpu``); a no-op outside torchrun.

    The timeout is long (``WSSSBENCH_DIST_TIMEOUT`` minutes, default 180): while rank 0 builds a stage
    alone (a method's own expansion, a figure), the other ranks wait at a barrier.
    """
    if not active() or _STATE["initialised"]:
        return
    import torch
    import torch.distributed as dist
    if device == "cuda":
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(minutes=float(os.environ.get("WSSSBENCH_DIST_TIMEOUT", "180")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timeout)
    _STATE.update(initialised=True, device=device)


def _joined() -> None:
    """Join on first use (gloo) where no run called :func:`init`, e.g. ``torchrun -m wsssbench eval ...``."""
    if not _STATE["initialised"]:
        init("cpu")


def barrier() -> None:
    if active():
        import torch.distributed as dist
        _joined()
        if _STATE.get("device") == "cuda":
            dist.barrier(device_ids=[local_rank()])
        else:
            dist.barrier()


def shard(items: Sequence) -> list:
    """This rank's share of ``items``: every ``world()``-th item from ``rank()`` (all of them in a plain run)."""
    return list(items)[rank()::world()] if active() else list(items)


def all_reduce_sum(x):
    """The element-wise sum of ``x`` over ranks (a numpy array or torch tensor; returned as the same type,
    on its device). Integer state (confusion counts) is summed exactly; floats in float64."""
    if not active():
        return x
    import numpy as np
    import torch
    import torch.distributed as dist
    _joined()
    was_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x)) if was_numpy else x
    dev = torch.device("cuda", local_rank()) if _STATE.get("device") == "cuda" else torch.device("cpu")
    buf = t.to(dev, torch.int64 if not t.dtype.is_floating_point else torch.float64).clone()
    dist.all_reduce(buf)
    out = buf.to(t.dtype).cpu() if was_numpy else buf.to(t.device, t.dtype)
    return out.numpy() if was_numpy else out


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (so all ranks take one branch, e.g. "this stage is cached")."""
    if not active():
        return flag
    import torch
    return bool(all_reduce_sum(torch.tensor([int(flag) if is_main() else 0]))[0])


def local_batch(batch_size: int, what: str) -> int:
    """The per-rank batch of a global ``batch_size`` (the configs' batch sizes are global: N ranks of
    ``batch_size / N`` images step like one process of ``batch_size``); not divisible is a UserError."""
    if not active():
        return batch_size
    if batch_size % world():
        from .errors import UserError
        raise UserError(f"--set {what}={batch_size}: the batch is split over {world()} processes; "
                        f"use a multiple of {world()}")
    return batch_size // world()


def check_batches(cfg, n: int) -> None:
    """Every ``*_batch_size`` of ``cfg`` splits evenly over ``n`` processes (the batch sizes are global)."""
    from .errors import UserError
    for name, value in vars(cfg).items():
        if name.endswith("batch_size") and isinstance(value, int) and value % n:
            raise UserError(f"--set {name}={value}: the batch is split over {n} processes; use a multiple of {n}")


def ddp_step(ctx, model, step):
    """A training hook ``step(ctx, model, batch) -> loss`` run, under torchrun, through a
    ``DistributedDataParallel`` around ``model`` (``step`` itself in a plain run). The whole step is DDP's
    forward, so any method's loss (``model.cams(...)``, ``model.outputs(...)``, several calls) syncs its
    gradients; ``find_unused_parameters`` since a step may leave some parameters out."""
    if not active():
        return step
    import torch
    from torch.nn.parallel import DistributedDataParallel
    _joined()

    class _Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return step(ctx, self.model, batch)

    ids = [local_rank()] if _STATE.get("device") == "cuda" else None
    ddp = DistributedDataParallel(_Step(), device_ids=ids, find_unused_parameters=True)
    return lambda ctx, model, batch: ddp(batch)


class RankSlices:
    """A batch sampler whose batches every rank draws alike (one seed), each cut to this rank's items
    ``batch[rank::world]``: N ranks together step on the batches one process would."""

    def __init__(self, batches, batch_size: int, what: str):
        local_batch(batch_size, what)       # a global batch that does not split evenly is refused
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield batch[rank()::world()]


def rank_slices(batches, batch_size: int, what: str):
    """``batches`` under torchrun cut by :class:`RankSlices`; ``batches`` itself in a plain run."""
    return RankSlices(batches, batch_size, what) if active() else batches
