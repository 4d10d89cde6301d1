"""``pgolf preflight PRESET``: a few minutes on the rented machine, before the paid run.

On the machine (and under the launcher) where the run will happen, it builds the run as ``pgolf
train`` would (data, model, attention kernel, compile and its priming), then measures what the run
will need: a few timed steps in every phase of the schedule (each context length and loop pass, QAT),
the gradient all-reduce under torchrun, peak training memory, GPTQ/Fisher calibration on the
configured batches, the export (rank 0 writes while the others wait), and the evaluation method on a
sample of the validation documents, scored from the exported artifact as the round trip does. Each
figure is set beside what it must fit (the track's caps, the device's memory, the calibration
reserve, the wait's timeout) in a verdict table; any miss makes the command exit 1. The weights are a
few steps old, so the artifact's bytes are judged by ``pgolf plan``'s projection of trained weights,
with the exported bytes shown beside it. The export is timed with this process's threads (torchrun
gives each rank one) and without the float weights a run also writes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgolf import __version__, dist
from pgolf.config.run import RunConfig
from pgolf.errors import ConfigError
from pgolf.eval.artifact import load_artifact, score_loaded
from pgolf.eval.score import LUMP_PHASES, EvalClock
from pgolf.pack.bundle import code_account
from pgolf.pipeline import ARTIFACT_NAME, artifact_meta, claim, export_model
from pgolf.quant.qat import enable_qat
from pgolf.runlog import RunLog
from pgolf.tools.plan.artifact import off_track_before, projected_model_bytes
from pgolf.tracks import get_track
from pgolf.train.calibration import calibrate
from pgolf.train.clock import STOP_MARGIN, TrainClock
from pgolf.train.schedule import StepPlan
from pgolf.train.trainer import Trainer
from pgolf.vocab import BOS_ID


def scratch_dir() -> Path:
    """A fresh folder every rank uses (rank 0 makes it; under torchrun its path is broadcast)."""
    import tempfile

    name = [tempfile.mkdtemp(prefix="pgolf-preflight-") if dist.rank() == 0 else None]
    if dist.world_size() > 1:
        torch.distributed.broadcast_object_list(name, src=0)
    return Path(name[0])


MEMORY_HEADROOM = 0.95
"""Peak memory must stay under this share of the device's (fragmentation, NCCL buffers, the eval)."""


@dataclass(frozen=True)
class Figure:
    """One row of the verdict: a measured figure beside what it must fit (``ok`` None: nothing to fit)."""

    name: str
    measured: str
    limit: str
    ok: bool | None


@dataclass
class Preflight:
    preset: str
    track: str
    environment: dict
    phases: list[dict] = field(default_factory=list)
    """Per training phase: progress at its start, sequence length, loop passes, QAT, step ms, peak memory."""
    evaluation: dict = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok is not False for f in self.figures)

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "track": self.track,
            "ok": self.ok,
            "environment": self.environment,
            "phases": self.phases,
            "evaluation": self.evaluation,
            "figures": [dataclasses.asdict(f) for f in self.figures],
        }

    def lines(self) -> list[str]:
        env = self.environment
        out = [f"preflight: {self.preset} on track {self.track}"]
        out += [f"  {k:<18} {v}" for k, v in env.items()]
        out.append("training phases (timed steps, median):")
        for p in self.phases:
            out.append(
                f"  from {p['from']:.2f} of the run: seq {p['seq_len']}, loop passes {p['loop_passes']}"
                f"{', QAT' if p['qat'] else ''}: {p['step_ms']:,.1f} ms/step, peak {p['peak']}"
            )
        width = max(len(f.name) for f in self.figures)
        out.append("verdict:")
        for f in self.figures:
            mark = {True: "ok  ", False: "MISS", None: "    "}[f.ok]
            out.append(f"  {mark} {f.name:<{width}}  {f.measured:<28} {f.limit}")
        out.append("preflight: PASS" if self.ok else "preflight: FAIL (a MISS above would cost the paid run)")
        return out


def environment(trainer: Trainer, compile_s: float | None) -> dict:
    """Machine, versions, kernel, compile and data, as the run will see them."""
    info = trainer.info
    dev = info.device
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if dist.world_size() > 1 else "unused"
        machine = f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.1f} GiB each"
        versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}"
    else:
        machine = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        versions = f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"
    data = trainer.valset
    return {
        "machine": machine,
        "versions": f"pgolf {__version__}, python {platform.python_version()}, {versions}",
        "world size": info.world_size,
        "attention": trainer.attention,
        "compile": f"compiled and primed in {compile_s:.1f} s" if compile_s is not None else "eager",
        "data": f"{len(trainer.train_files)} train shards ({trainer.loader.stream.total:,} tokens, "
        f"verified), validation {data.tokens.numel():,} tokens",
        "tokenizer": f"{data.tokenizer_path} (sha256 {data.tokenizer_sha256[:12]}...)",
    }


def device_memory(device: torch.device) -> int:
    """Bytes of memory on the device (a CPU: the machine's RAM)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_bytes(device: torch.device) -> int:
    """Peak since the last reset: CUDA's reserved memory (what the allocator holds), a CPU's resident set."""
    peak = dist.peak_memory(device)
    return int(2**20 * peak.get("reserved_mib", peak.get("rss_mib", 0.0)))


def timed_steps(trainer: Trainer, plan: StepPlan, steps: int) -> tuple[float, list[float]]:
    """``steps`` + 1 training steps as ``plan`` schedules them, each synchronised: the first one's ms
    (a graph the priming missed compiles there) and the others'."""
    sync, out = dist.synchronizer(trainer.device), []
    for _ in range(steps + 1):
        sync()
        t0 = time.perf_counter()
        trainer.train_step(plan)
        sync()
        out.append(1e3 * (time.perf_counter() - t0))
    return out[0], out[1:]


def train_phases(trainer: Trainer, steps: int) -> tuple[list[dict], float | None]:
    """Time every phase the schedule visits (``Schedule.phase_starts``), then QAT's, if on; with QAT,
    also its first step in ms (in a compiled run, its recompile falls on the training clock)."""
    cfg, device, schedule, out = trainer.cfg, trainer.device, trainer.schedule, []
    plans = schedule.phase_starts()
    phases = [(plan, False) for plan in plans]
    if cfg.quant.qat:
        phases.append((schedule.rehearse(max(cfg.quant.qat_from_frac, plans[-1].progress)), True))
    qat_first = None
    for plan, qat in phases:
        trainer.base_model.loop_passes = plan.loop_passes
        if qat:
            enable_qat(trainer.base_model, cfg.quant)
        dist.reset_peak_memory(device)
        first, ms = timed_steps(trainer, plan, steps)
        qat_first = first if qat else qat_first
        peak = peak_bytes(device)
        out.append(
            {
                "from": plan.progress,
                "seq_len": plan.seq_len,
                "loop_passes": plan.loop_passes,
                "qat": qat,
                "step_ms": statistics.median(ms),
                "peak_bytes": peak,
                "peak": f"{peak / 2**30:.2f} GiB",
            }
        )
    return out, qat_first


def projected_steps(phases: list[dict], cap_ms: float) -> float:
    """Steps in the cap: each phase's share of the wall clock (up to the next phase's start) at its step
    time. QAT's phase, when timed, overrides the tail from its start."""
    plain = [p for p in phases if not p["qat"]]
    bounds = [p["from"] for p in plain[1:]] + [1.0]
    steps = 0.0
    qat = next((p for p in phases if p["qat"]), None)
    for p, end in zip(plain, bounds, strict=True):
        lo, hi = p["from"], min(end, qat["from"]) if qat else end
        steps += max(0.0, hi - lo) * cap_ms / p["step_ms"]
    if qat:
        steps += (1.0 - qat["from"]) * cap_ms / qat["step_ms"]
    return steps


def all_reduce_ms(trainer: Trainer, reps: int = 5) -> float | None:
    """The gradient all-reduce of one step (every parameter, fp32, one coalesced call), median ms; None
    in one process."""
    if dist.world_size() == 1:
        return None
    numel = sum(p.numel() for p in trainer.opt.params)
    flat, sync, out = torch.ones(numel, device=trainer.device), dist.synchronizer(trainer.device), []
    for _ in range(reps + 1):
        sync()
        t0 = time.perf_counter()
        dist.all_reduce_mean_(flat)
        sync()
        out.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(out[1:])


def calibration_and_export(trainer: Trainer, out: Path, log: RunLog) -> tuple[float, float, Path]:
    """Calibration as the run's end does it (on the configured batches; 0 s when quant asks for none)
    and the export rank 0 runs while the others wait: seconds of each and the artifact's path."""
    cfg, sync = trainer.cfg, dist.synchronizer(trainer.device)
    calib, calib_s = None, 0.0
    if cfg.quant.calibrates:
        batches = iter(lambda: trainer.loader.next_batch(trainer.local_tokens, cfg.train.seq_len), None)
        calib, ms = calibrate(
            trainer.base_model, cfg.quant, batches, TrainClock(0.0, sync), trainer.device, log
        )
        calib_s = ms / 1e3
    meta = artifact_meta(
        cfg, trainer.valset, steps=0, looping=trainer.base_model.loop_passes, train_seconds=0
    )
    path, t0 = out / ARTIFACT_NAME, time.perf_counter()
    if trainer.info.is_main:
        export_model(trainer.base_model, cfg, meta, path, calib)
    export_s = time.perf_counter() - t0
    dist.barrier()
    return calib_s, export_s, path


def sample_docs(n_docs: int, share: float, least: int) -> int:
    """Documents to score: ``share`` of them, at least ``least`` (all when there are fewer)."""
    return min(n_docs, max(least, math.ceil(share * n_docs)))


def evaluation_sample(
    trainer: Trainer, artifact: Path, docs: int, val_tokens: int | None = None, ranks: int | None = None
) -> dict:
    """Score the first ``docs`` validation documents with the run's method from the artifact (as the
    round trip does), then project the whole stream (``val_tokens`` long when given: the contest's,
    when the data here is a stand-in) on ``ranks`` processes (default: these): phases that scale
    with the targets by the stream's share, load and warm-up as measured. Phased global SGD runs in
    the sample on the same share of its documents as in the full run (its prefix scaled down), and
    its lump scales back up by the documents (one epoch over them, shared by the ranks)."""
    device, valset = trainer.device, trainer.valset
    here, ranks = dist.world_size(), ranks or dist.world_size()
    full_tokens = val_tokens or valset.tokens.numel()
    full_docs = round(int((valset.tokens == BOS_ID).sum()) * full_tokens / valset.tokens.numel())
    clock = EvalClock(dist.synchronizer(device))
    with clock.phase("load"):
        loaded = load_artifact(artifact, device, trainer.attention)
    ev = dataclasses.replace(loaded.meta.eval, val_docs=docs)
    phase_docs = ev.lora_phase_docs if ev.ttt == "lora" else 0
    if phase_docs:  # the prefix's share of the documents, as in the full evaluation
        ev = dataclasses.replace(ev, lora_phase_docs=max(1, round(docs * min(1.0, phase_docs / full_docs))))
    report = score_loaded(loaded, valset, ev, device, clock)
    sample = valset.first_docs(docs).tokens.numel()
    scale = full_tokens / sample * here / ranks  # the stream's share, each rank's part of it
    lump = min(phase_docs, full_docs) / ev.lora_phase_docs * here / ranks if phase_docs else 1.0
    projected = sum(
        seconds * (1.0 if name in ("load", "warmup") else lump if name in LUMP_PHASES else scale)
        for name, seconds in report.phases.items()
    )
    return {
        "docs": docs,
        "targets": report.result.tokens,
        "val_bpb": report.result.val_bpb,
        "phases": {k: round(v, 3) for k, v in report.phases.items()},
        "seconds": report.seconds,
        "projected_seconds": projected,
        "sample_tokens": sample,
        "full_tokens": full_tokens,
        "ranks": ranks,
    }


def _fits(
    name: str, value: float, limit: float, unit: str, fmt: str = ",.1f", off: list[str] | None = None
) -> Figure:
    """A figure that must stay at or under ``limit`` (0: no limit on this track); a track's cap passes
    the track's verdict on it as ``off`` (``Track.judge``), which then decides."""
    if not limit:
        return Figure(name, f"{value:{fmt}} {unit}", "no cap on this track", None)
    ok = value <= limit if off is None else not off
    return Figure(name, f"{value:{fmt}} {unit}", f"<= {limit:{fmt}} {unit}", ok)


def verdict(
    pf: Preflight,
    trainer: Trainer,
    calib_s: float,
    export_s: float,
    artifact: Path,
    reduce_ms: float | None,
    qat_first_ms: float | None,
) -> None:
    """The figures of ``pf`` against what they must fit."""
    cfg, f = trainer.cfg, pf.figures
    track = get_track(cfg.track)
    reasons = off_track_before(cfg)
    f.append(
        Figure(
            "on track before the first step",
            "; ".join(reasons) or "yes",
            "pgolf train refuses it otherwise",
            not reasons if track.official else None,
        )
    )
    slowest = max(p["step_ms"] for p in pf.phases)
    if cap_ms := trainer.schedule.cap_ms:
        name = f"slowest step x {STOP_MARGIN} (the stop rule)"
        f.append(_fits(name, STOP_MARGIN * slowest, cap_ms, "ms"))
        steps = projected_steps(pf.phases, cap_ms)
        f.append(Figure("projected steps in the cap", f"{steps:,.0f}", "", None))
    if qat_first_ms is not None:
        f.append(Figure("first QAT step (recompiles on the clock)", f"{qat_first_ms:,.0f} ms", "", None))
    if reduce_ms is not None:
        share = f"{reduce_ms:,.1f} ms ({reduce_ms / slowest:.0%} of a step)"
        f.append(Figure("gradient all-reduce per step", share, "", None))
    peak, memory = max(p["peak_bytes"] for p in pf.phases), device_memory(trainer.device)
    f.append(_fits("peak memory (training)", peak / 2**30, MEMORY_HEADROOM * memory / 2**30, "GiB", ",.2f"))
    if cfg.quant.calibrates:
        f.append(_fits("calibration", calib_s, cfg.quant.gptq_reserve_seconds, "s", ",.2f"))
    f.append(_fits("export (the other ranks wait)", export_s, dist.PAUSE_TIMEOUT_S, "s", ",.2f"))
    code = code_account(cfg).bytes
    projected = projected_model_bytes(cfg)[0] + code
    exported = artifact.stat().st_size + code if artifact.exists() else 0
    f.append(Figure("bytes, projected for trained weights", f"{projected:,}", "judged above", None))
    f.append(Figure("bytes exported (these weights)", f"{exported:,}", "", None))
    ev = pf.evaluation
    seconds = ev["projected_seconds"]
    name = f"evaluation on {ev['ranks']} rank(s), projected from {ev['docs']:,} documents"
    f.append(_fits(name, seconds, track.eval_seconds, "s", off=track.judge(eval_seconds=seconds)))


def run_preflight(
    cfg: RunConfig,
    out: Path,
    *,
    steps: int = 3,
    eval_share: float = 0.02,
    eval_least: int = 64,
    val_tokens: int | None = None,
    ranks: int | None = None,
) -> Preflight:
    """The preflight of ``cfg`` in ``out`` (its log and artifact, written by rank 0: every rank must
    see the folder), the evaluation projected onto ``val_tokens`` and ``ranks`` when given; the
    process group (torchrun) is the caller's to tear down."""
    if steps < 1 or not 0 < eval_share <= 1:
        raise ConfigError(f"preflight: --steps {steps} must be >= 1 and --eval-share {eval_share} in (0, 1]")
    info = dist.setup(cfg.train.device)
    claim(out, resume=False, force=False, is_main=info.is_main)
    dist.barrier()  # every rank has looked before rank 0 writes the log
    log = RunLog(out, enabled=info.is_main, echo=False)
    try:
        trainer = Trainer(cfg, out, info, log, resume=False)
        trainer.setup()
        t0 = time.perf_counter()
        trainer.prime()
        compile_s = time.perf_counter() - t0 if trainer.model is not trainer.base_model else None
        pf = Preflight(cfg.preset, cfg.track, environment(trainer, compile_s))
        pf.phases, qat_first = train_phases(trainer, steps)
        reduce_ms = all_reduce_ms(trainer)
        calib_s, export_s, artifact = calibration_and_export(trainer, out, log)
        docs = sample_docs(int((trainer.valset.tokens == BOS_ID).sum()), eval_share, eval_least)
        pf.evaluation = evaluation_sample(trainer, artifact, docs, val_tokens, ranks)
        verdict(pf, trainer, calib_s, export_s, artifact, reduce_ms, qat_first)
        return pf
    finally:
        log.close()
