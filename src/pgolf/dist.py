"""Process-group setup and collectives; every helper is a no-op at world size 1.

The launcher's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (torchrun) decide the layout. NCCL is
used when the device is CUDA, gloo otherwise, so the same code runs CPU tests with 2 processes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pgolf.errors import ConfigError

COLLECTIVE_TIMEOUT_S = 300
"""How long a rank waits in a collective (all-reduce, gather) for the others before the job fails: far
shorter than NCCL's 10-minute default, which a hung rank would otherwise cost in paid time."""
PAUSE_TIMEOUT_S = 1800
"""How long the ranks wait in ``barrier`` while one of them works alone: rank 0 writing the artifact
(GPTQ's solve on the CPU and, with ``pack.compressor auto``, every codec in turn: minutes for a 36M-
parameter model), a checkpoint, the end of a run. Those waits use a gloo group of their own, so the
collectives keep their short timeout."""

_pause_group = None


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ConfigError(f"train.device={name!r}; expected auto, cpu or cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device, cpu_bf16: bool = False):
    """bf16 autocast on CUDA (seed-techniques §5.4); on a CPU only with ``cpu_bf16`` (train.cpu_bf16,
    already checked against ``cpu_has_amx``), since bf16 matmuls without AMX are slow."""
    if device.type == "cuda" or cpu_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), where oneDNN's bf16 matmuls
    run several times faster than fp32 ones (benchmarks/RESULTS.md); False if torch cannot tell."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def synchronizer(device: torch.device):
    """A callable that waits for queued work on ``device`` (CUDA), or does nothing (CPU): clocks call
    it before each reading so that device time is counted."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak memory in MiB: on CUDA, allocated and reserved since the last ``reset_peak_memory`` (the
    contest's script logs both); on a CPU, the process's peak resident set so far (not resettable)."""
    if device.type == "cuda":
        mib = 2**20
        return {
            "allocated_mib": torch.cuda.max_memory_allocated(device) / mib,
            "reserved_mib": torch.cuda.max_memory_reserved(device) / mib,
        }
    try:
        import resource
    except ImportError:  # Windows
        return {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"rss_mib": rss / (2**20 if sys.platform == "darwin" else 1024)}


def log_peak_memory(log, phase: str, device: torch.device, into: dict) -> None:
    """Log this phase's peak memory (``peak_memory``), store it in ``into[phase]``, and start the next
    phase's count."""
    peak = into[phase] = {k: round(v, 1) for k, v in peak_memory(device).items()}
    figures = " ".join(f"{k.removesuffix('_mib')}:{v:.0f}MiB" for k, v in peak.items())
    log.event("memory", f"peak_memory phase:{phase} {figures}", phase=phase, **peak)
    reset_peak_memory(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def setup(device_name: str = "auto") -> DistInfo:
    """Initialise the process group if launched with WORLD_SIZE > 1; idempotent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            device_id=None,
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
        global _pause_group
        _pause_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=PAUSE_TIMEOUT_S))
    return DistInfo(rank, world, local_rank, device)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world_size())
    return t


def max_over_ranks(values: tuple[float, ...], device: torch.device) -> tuple[float, ...]:
    """Each value's maximum over ranks with one all-reduce in float64 (a host sync); free at world size
    1. Flags passed as 0/1 come back OR-ed."""
    if world_size() == 1:
        return values
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(t.tolist())


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks with one coalesced all-reduce."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    all_reduce_mean_(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    """Wait for every rank, with ``PAUSE_TIMEOUT_S`` (one rank may be working alone meanwhile)."""
    if world_size() > 1:
        dist.barrier(group=_pause_group)


def teardown(failed: bool = False) -> None:
    """Destroy the process group. After a normal end, once every rank has arrived: a rank that leaves
    while another is still finishing makes gloo abort at exit ("terminate called without an active
    exception"). After an exception (``failed``), at once: the other ranks are waiting in a collective
    this rank will never join, and a barrier here would hang the job until the timeout; the process
    then exits non-zero and the launcher stops the rest."""
    global _pause_group
    if dist.is_available() and dist.is_initialized():
        if not failed:
            barrier()
        dist.destroy_process_group()
        _pause_group = None


@contextlib.contextmanager
def closing():
    """Tear the process group (if any) down when the body ends: ``teardown`` with its barrier after a
    normal end, without it when the body raises (the exception then propagates)."""
    try:
        yield
    except BaseException:
        teardown(failed=True)
        raise
    teardown()
