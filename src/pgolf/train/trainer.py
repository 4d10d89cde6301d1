"""The trainer: one code path for CPU, one GPU and ``torchrun --nproc_per_node=N``.

Per step each rank accumulates ``microbatches / world_size`` micro-batches, gradients are averaged
over ranks in one all-reduce, then Adam and Muon step with the scheduled LR. Training time counts
only steps and their data reads (``clock``). On CUDA (on a CPU with ``train.compile_cpu``) the model
and Newton-Schulz are compiled and primed with ``warmup_steps`` real steps whose effect is undone
(model, optimizer and data loader restored) before the clock starts. ``fit`` ends with the weight
average applied and the pre-quant score; packing and the round trip are ``pipeline``'s.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pgolf import __version__, dist
from pgolf.config.run import RunConfig, format_config
from pgolf.config.train import TrainConfig
from pgolf.data.loader import DistributedTokenLoader
from pgolf.data.valset import ValidationSet, load_validation, train_files
from pgolf.errors import ConfigError
from pgolf.eval.bpb import BpbResult
from pgolf.eval.predict import ModelPredictor
from pgolf.eval.score import score
from pgolf.methods.windows import plan_windows
from pgolf.model.gpt import GPT
from pgolf.model.kernels import resolve_attention
from pgolf.model.params import count_parameters
from pgolf.optim import Optimizers, newton_schulz5
from pgolf.pack.bundle import code_account
from pgolf.quant.qat import KurtosisPenalty
from pgolf.runlog import RunLog
from pgolf.train.averaging import WeightAverage
from pgolf.train.calibration import Calibration, calibrate
from pgolf.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from pgolf.train.clock import StopRule, TrainClock
from pgolf.train.phases import Phases
from pgolf.train.schedule import Schedule, StepPlan


@dataclass
class TrainOutcome:
    steps: int
    train_ms: float
    """Training time, GPTQ calibration included."""
    stopped_by: str
    pre_quant: BpbResult
    calibration: Calibration | None = None
    """GPTQ's Hessians and the Fisher sensitivities (None when quant asks for neither)."""
    calibration_ms: float = 0.0
    """The part of train_ms spent collecting them."""


def log_environment(log: RunLog, cfg: RunConfig, info: dist.DistInfo, accum: int) -> None:
    """Versions, device, world size, the counted code's digest and bytes, the resolved config."""
    gpu = torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else platform.processor()
    log.line(f"pgolf {__version__} python {platform.python_version()} torch {torch.__version__}")
    log.line(f"device:{info.device} ({gpu or 'cpu'}) world_size:{info.world_size} grad_accum_steps:{accum}")
    code = code_account(cfg)
    log.event(
        "code",
        code_form=code.form,
        code_sha256=code.sha256,
        bytes_code=code.bytes,
        sources_sha256=code.sources_sha256,
    )
    log.line("Hyperparameters:\n" + "\n".join("  " + s for s in format_config(cfg).splitlines()))


def compiles(tc: TrainConfig, device: torch.device) -> bool:
    """Whether the run compiles (CUDA with train.compile; a CPU also with train.compile_cpu). A CPU
    compile without the compiler inductor runs (CXX, else g++; clang++ on macOS) is refused here, at
    setup, not at the first step."""
    if not tc.compile or (device.type != "cuda" and not tc.compile_cpu):
        return False
    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if device.type == "cpu" and not shutil.which(cxx):
        raise ConfigError(f"train.compile_cpu: no C++ compiler {cxx!r} (set CXX or install it)")
    return True


def uses_cpu_bf16(tc: TrainConfig, device: torch.device, log: RunLog) -> bool:
    """Whether the training steps autocast to bf16 on this CPU: train.cpu_bf16 where it has AMX; fp32
    elsewhere, where bf16 matmuls would be slower (logged either way)."""
    if not (tc.cpu_bf16 and device.type == "cpu"):
        return False
    on = dist.cpu_has_amx()
    how = "bf16 autocast" if on else "no AMX on this CPU: fp32 (bf16 would be slower)"
    log.event("cpu_bf16", f"train.cpu_bf16: {how}", cpu_bf16=on)
    return on


def use_attention(model: GPT, cfg: RunConfig, device: torch.device, log: RunLog) -> str:
    """Pin ``model``'s attention to the kernel train.attention resolves to here, logged; its name."""
    name = resolve_attention(cfg.train.attention, device, cfg.model.doc_mask)
    model.use_attention(name)
    log.event("attention", f"attention:{name} (train.attention={cfg.train.attention})", attention=name)
    return name


def score_eager(
    model: GPT, cfg: RunConfig, scored: ValidationSet, windows: list, device: torch.device
) -> BpbResult:
    """Score ``model`` (the one being trained) on ``windows`` of ``scored``, eager: a compiled model
    (static shapes, whole graph) would recompile for every window shape and fail."""
    was_training = model.training
    model.eval()
    model.rope_len = cfg.eval_seq_len  # one RoPE base for every window
    r = score(
        ModelPredictor(model, device),
        scored.tokens,
        scored.target_bytes,
        windows,
        batch_tokens=cfg.eval.batch_tokens,
        device=device,
    )
    model.rope_len = 0
    model.train(was_training)
    return r


class LossHistory:
    """Training losses by step, kept on the device until read: one sync per read, not one per step."""

    def __init__(self, rows: list[dict] | None = None) -> None:
        self._rows = list(rows or [])
        self._pending: list[tuple[int, torch.Tensor]] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        self._pending.append((step, loss))

    def rows(self) -> list[dict]:
        if self._pending:
            values = torch.stack([t for _, t in self._pending]).tolist()
            self._rows += [
                {"step": s, "train_loss": v} for (s, _), v in zip(self._pending, values, strict=True)
            ]
            self._pending = []
        return self._rows


def warn_unprimed(log: RunLog, steps: int, phases: int, qat: bool) -> None:
    """Priming covers fewer phases than the run has (QAT's switch is never primed): graphs compile on
    the training clock."""
    if steps < phases or qat:
        log.event(
            "warmup_short",
            f"warning: warmup_steps {steps}, {phases} phases, qat {qat}: graphs compile while timed",
            warmup_steps=steps,
            phases=phases,
            qat=qat,
        )


def new_loader(files: list[Path], cfg: RunConfig, info: dist.DistInfo) -> DistributedTokenLoader:
    """This rank's loader of the training shards (a fresh one starts at the stream's beginning)."""
    return DistributedTokenLoader(
        files,
        rank=info.rank,
        world_size=info.world_size,
        vocab_size=cfg.model.vocab_size,
        device=info.device,
        kind=cfg.train.loader,
    )


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir: Path, info: dist.DistInfo, log: RunLog, resume: bool) -> None:
        self.cfg, self.out_dir, self.info, self.log, self.resume = cfg, out_dir, info, log, resume
        self.device = info.device
        tc = cfg.train
        if tc.microbatches % info.world_size:
            raise ConfigError(
                f"world size {info.world_size} must divide train.microbatches={tc.microbatches}"
            )
        self.accum = tc.microbatches // info.world_size
        self.local_tokens = tc.batch_tokens // tc.microbatches
        self.losses = LossHistory()
        self.step = 0
        """Optimizer steps done so far (what a Ctrl-C reports)."""
        self.saved_step: int | None = None
        """The step of the last checkpoint written or resumed from (None: none)."""
        self.memory: dict[str, dict] = {}
        """Peak memory per phase (``dist.log_peak_memory``): train, calibration; the pipeline adds eval."""
        self.average: WeightAverage | None = None  # created after priming
        self.schedule = Schedule(cfg)
        """Every per-step decision, asked once per step (``run_loop``)."""

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.valset: ValidationSet = load_validation(cfg.data, cfg.model.vocab_size)
        self.train_files = train_files(cfg.data, self.valset)
        ev = cfg.eval
        self.scored = self.valset.first_docs(ev.val_docs)  # what in-training validation scores
        self.windows = plan_windows(self.scored.tokens, ev.method, cfg.eval_seq_len, ev.stride)
        self.loader = new_loader(self.train_files, self.cfg, self.info)
        torch.manual_seed(cfg.train.seed)
        self.base_model = GPT(cfg.model).to(self.device)
        self.attention = use_attention(self.base_model, cfg, self.device, self.log)
        self.model = self.base_model
        self.phases = Phases(cfg, self.base_model, self.log)
        self.nekp = KurtosisPenalty(self.base_model, cfg.quant) if cfg.quant.nekp else None
        self.opt = Optimizers(self.base_model, cfg.optim, cfg.model.tie_embeddings, self.device)
        self.cpu_bf16 = uses_cpu_bf16(cfg.train, self.device, self.log)
        if compiles(cfg.train, self.device):
            self.compile()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def compile(self, backend: str = "inductor") -> None:
        """Whole-graph, static-shape compile of the model and Newton-Schulz (``compiles``; tests too)."""
        self.model = torch.compile(self.base_model, dynamic=False, fullgraph=True, backend=backend)
        self.opt.muon.ns = torch.compile(newton_schulz5, backend=backend)

    def write_header(self) -> None:
        """Self-describing log: the environment (``log_environment``), then the data and the model."""
        log_environment(self.log, self.cfg, self.info, self.accum)
        self.log.event(
            "data",
            train_shards=len(self.train_files),
            train_tokens=self.loader.stream.total,
            val_tokens=self.valset.tokens.numel(),
            val_bytes_from=self.valset.bytes_source,
            tokenizer=str(self.valset.tokenizer_path),
            split=self.valset.split,
        )
        if self.valset.split == "dev":
            self.log.event("split", "data.score_split:dev every score is a dev score, not validation")
        if subset := self.scored.describe():
            self.log.event(
                "val_subset", f"validation subset: {subset} (eval.val_docs): every score is unofficial"
            )
        self.log.event("model", model_params=count_parameters(self.base_model))
        if self.nekp is not None:
            self.log.event("nekp", self.nekp.describe())

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self, plan: StepPlan) -> torch.Tensor:
        """One optimizer step at ``plan``'s length, LR, momentum and weight decay (its loop passes and
        QAT are the model's: ``Phases.apply``)."""
        total = torch.zeros((), device=self.device)
        for _ in range(self.accum):
            x, y = self.loader.next_batch(self.local_tokens, plan.seq_len)
            with dist.autocast_for(self.device, self.cpu_bf16):
                loss = self.model(x, y)
            (loss / self.accum).backward()
            total += loss.detach()
        if self.nekp is not None:  # the same on every rank, so averaging keeps it whole
            self.nekp.backward()
        dist.average_gradients(self.opt.params)
        self.opt.step(plan.lr_mul, plan.momentum, plan.wd_mul)
        self.opt.zero_grad()
        if self.average is not None:
            self.average.update(self.base_model, plan.step + 1, plan.lr_mul)
        return total / self.accum

    def prime(self) -> None:
        """Run ``warmup_steps`` real steps (to trigger compilation), then restore every state. The steps
        visit every (length, loop passes) phase the schedule will (``Schedule.phase_starts``), so a
        compiled model traces each graph before the clock starts; the rest run in the last phase."""
        n = self.cfg.train.warmup_steps
        plans = self.schedule.phase_starts()
        if self.model is not self.base_model:
            warn_unprimed(self.log, n, len(plans), self.cfg.quant.qat)
        if n <= 0:
            return
        model_state = copy.deepcopy(self.base_model.state_dict())
        opt_state = copy.deepcopy(self.opt.state_dict())
        skip = max(len(plans) - n, 0)  # too few steps for every phase: the last ones
        for i in range(n):
            plan = plans[min(skip + i, len(plans) - 1)]
            self.base_model.loop_passes = plan.loop_passes
            self.train_step(plan)
            self.log.event("warmup", f"warmup_step:{i + 1}/{n}", warmup_step=i + 1)
        self.base_model.loop_passes = 0
        self.base_model.load_state_dict(model_state)
        self.opt.load_state_dict(opt_state)
        self.opt.zero_grad()
        self.loader = new_loader(self.train_files, self.cfg, self.info)

    # ---- checkpoints -------------------------------------------------------------------------
    @property
    def history(self) -> list[dict]:
        """Every training loss so far, ``{"step", "train_loss"}`` per step (read from the device now)."""
        return self.losses.rows()

    def save(self, step: int, train_ms: float) -> None:
        if self.info.is_main:
            path = self.out_dir / CHECKPOINT_NAME
            save_checkpoint(
                path,
                {
                    "config": self.cfg.to_dict(),
                    "step": step,
                    "train_ms": train_ms,
                    "model": self.base_model.state_dict(),
                    "optim": self.opt.state_dict(),
                    "loader": self.loader.stream.state(),
                    "history": self.history,
                    "average": self.average.state_dict(),
                    **self.phases.state(),
                },
            )
            self.log.event("checkpoint", step=step, path=str(path))
        dist.barrier()
        self.saved_step = step

    def restore(self) -> tuple[int, float]:
        if not self.resume:
            return 0, 0.0
        state = load_checkpoint(self.out_dir / CHECKPOINT_NAME, self.cfg.to_dict(), self.device)
        if state is None:
            return 0, 0.0
        self.base_model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.loader.stream.load_state(state["loader"])
        self.losses = LossHistory(state["history"])
        self.average.load_state_dict(state["average"])
        self.phases.load_state(state)
        self.log.event("resume", step=state["step"], train_time_ms=round(state["train_ms"]))
        self.saved_step = self.step = int(state["step"])
        return int(state["step"]), float(state["train_ms"])

    # ---- loop --------------------------------------------------------------------------------
    def validate(self) -> BpbResult:
        """The model being trained, scored on the validation set (``score_eager``)."""
        return score_eager(self.base_model, self.cfg, self.scored, self.windows, self.device)

    def run_loop(self, clock_now=None) -> tuple[int, float, str]:
        tc, cap_ms = self.cfg.train, self.schedule.cap_ms
        step, train_ms = self.restore()
        self.log.start_progress(
            tc.max_wallclock_seconds if cap_ms else tc.iterations, "s" if cap_ms else "step"
        )
        stopped_by = "iterations"
        clock = TrainClock(train_ms, dist.synchronizer(self.device), clock_now or time.perf_counter)
        stop_rule = StopRule(cap_ms, self.device)
        while step < tc.iterations:
            # with a cap, decisions read the time: a sync, so that they see finished work
            stop, elapsed = stop_rule.decide(step, clock.read() if cap_ms else clock.elapsed_ms())
            if stop:
                stopped_by = "wallclock"
                break
            plan = self.schedule.at(step, elapsed)
            self.phases.apply(plan)
            self.losses.add(step + 1, self.train_step(plan))
            step = self.step = step + 1
            if tc.log_every and (step % tc.log_every == 0 or step == 1):
                self._log_train(step, clock.read())
            self.log.progress(clock.elapsed_ms() / 1000 if cap_ms else step)
            if tc.val_every and step % tc.val_every == 0 and step < tc.iterations:
                with clock.paused():
                    self._log_val(step, clock.ms)
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                with clock.paused():
                    self.save(step, clock.ms)
        train_ms = clock.stop()
        if stopped_by == "wallclock":
            self.log.event(
                "stop",
                f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{tc.iterations}",
                train_time_ms=round(train_ms, 1),
                step=step,
            )
        return step, train_ms, stopped_by

    def _log_train(self, step: int, elapsed: float) -> None:
        loss = self.history[-1]["train_loss"]
        self.log.event(
            "train",
            f"step:{step}/{self.cfg.train.iterations} train_loss:{loss:.4f} "
            f"train_time:{elapsed:.0f}ms step_avg:{elapsed / step:.2f}ms",
            step=step,
            train_loss=loss,
            train_time_ms=round(elapsed, 1),
        )

    def _log_val(self, step: int, train_ms: float) -> BpbResult:
        r, s = self.validate(), self.valset.split  # a dev score's line says dev_loss, dev_bpb
        self.log.event(
            "val",
            f"step:{step}/{self.cfg.train.iterations} {s}_loss:{r.val_loss:.4f} {s}_bpb:{r.val_bpb:.4f} "
            f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms",
            step=step,
            val_loss=r.val_loss,
            val_bpb=r.val_bpb,
            train_time_ms=round(train_ms, 1),
            split=s,
        )
        return r

    def fit(self, clock_now=None) -> TrainOutcome:
        """Set up, prime, train to the cap, apply the weight average and score the result."""
        self.setup()
        self.write_header()
        self.prime()
        self.average = WeightAverage(self.base_model, self.cfg.train)
        steps, train_ms, stopped_by = self.run_loop(clock_now)
        dist.log_peak_memory(self.log, "train", self.device, self.memory)
        applied = self.average.apply(self.base_model)
        self.log.event("averaging", f"averaging:{applied}", averaging=applied)
        calibration, before = None, train_ms
        if self.cfg.quant.calibrates:
            batches = iter(lambda: self.loader.next_batch(self.local_tokens, self.cfg.train.seq_len), None)
            clock = TrainClock(train_ms, dist.synchronizer(self.device))
            calibration, train_ms = calibrate(
                self.base_model, self.cfg.quant, batches, clock, self.device, self.log
            )
            dist.log_peak_memory(self.log, "calibration", self.device, self.memory)
        pre = self._log_val(steps, train_ms)
        return TrainOutcome(steps, train_ms, stopped_by, pre, calibration, train_ms - before)
