"""``train(cfg) -> RunResult``: one code path for CPU, one GPU and ``torchrun --nproc_per_node=N``.

Per step each rank accumulates ``microbatches / world_size`` micro-batches, gradients are averaged
over ranks in one all-reduce, then Adam and Muon step with the scheduled LR. The wall-clock cap
counts only training steps (validation is paused out, as in the contest); a step is not started if
the mean step time says it would end past the cap. On CUDA the model and Newton-Schulz are
compiled and primed with ``warmup_steps`` real steps whose effect is undone (model, optimizer and
data loader restored) before the clock starts. The run ends with the int8+zlib export, a reload of
the artifact from disk and the round-trip evaluation that is the reported score.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgolf import __version__, dist
from pgolf.artifact import SizeReport, code_bytes, write_artifact
from pgolf.averaging import WeightAverage
from pgolf.config import ConfigError, RunConfig, format_config, get_track
from pgolf.data.loader import DistributedTokenLoader
from pgolf.data.paths import load_tokenizer, resolve_data
from pgolf.data.shards import find_shards
from pgolf.evaluate import autocast_for, evaluate, load_model_from_artifact, load_val_tokens
from pgolf.fileio import atomic_file, file_sha256, write_json_atomic
from pgolf.metric import BpbResult, ByteLUT, build_byte_lut
from pgolf.model import GPT, count_parameters
from pgolf.optim import Optimizers, lr_multiplier, muon_momentum, newton_schulz5
from pgolf.quant import quantize_state_dict
from pgolf.runlog import RunLog

ARTIFACT_NAME = "artifact.pgolf"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class RunResult:
    config: RunConfig
    out_dir: Path
    steps: int
    train_seconds: float
    tokens_seen: int
    stopped_by: str
    num_params: int
    pre_quant: BpbResult
    roundtrip: BpbResult
    eval_seconds: float
    artifact_path: Path
    size: SizeReport
    history: list[dict] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "preset": self.config.preset,
            "track": self.config.track,
            "steps": self.steps,
            "train_seconds": round(self.train_seconds, 3),
            "tokens_seen": self.tokens_seen,
            "tokens_per_second": round(self.tokens_per_second, 1),
            "stopped_by": self.stopped_by,
            "num_params": self.num_params,
            "pre_quant_val_loss": self.pre_quant.val_loss,
            "pre_quant_val_bpb": self.pre_quant.val_bpb,
            "val_loss": self.roundtrip.val_loss,
            "val_bpb": self.roundtrip.val_bpb,
            "val_tokens": self.roundtrip.tokens,
            "val_bytes": self.roundtrip.bytes,
            "eval_seconds": round(self.eval_seconds, 3),
            "bytes_model": self.size.model_bytes,
            "bytes_code": self.size.code_bytes,
            "bytes_total": self.size.total_bytes,
            "bytes_cap": self.size.cap_bytes,
            "fits_cap": self.size.fits,
            "config": self.config.to_dict(),
        }


class TrainClock:
    """Training time in ms: runs from construction, pauses around validation and checkpoints.
    ``sync`` (a CUDA synchronize on GPU) makes queued device work count before each reading."""

    def __init__(self, ms: float, sync) -> None:
        self.ms, self.sync = ms, sync
        self.sync()
        self.t0 = time.perf_counter()

    def elapsed_ms(self) -> float:
        return self.ms + 1000 * (time.perf_counter() - self.t0)

    def stop(self) -> float:
        self.sync()
        self.ms = self.elapsed_ms()
        return self.ms

    @contextlib.contextmanager
    def paused(self):
        self.stop()
        yield
        self.t0 = time.perf_counter()


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir: Path, info: dist.DistInfo, resume: bool, echo: bool) -> None:
        self.cfg, self.out_dir, self.info = cfg, out_dir, info
        self.device = info.device
        self.resume = resume
        self.track = get_track(cfg.track)
        tc = cfg.train
        if tc.microbatches % info.world_size:
            raise ConfigError(
                f"world size {info.world_size} must divide train.microbatches={tc.microbatches}"
            )
        self.accum = tc.microbatches // info.world_size
        self.local_tokens = tc.batch_tokens // tc.microbatches
        self.log = RunLog(out_dir, enabled=info.is_main, echo=echo)
        self.history: list[dict] = []
        self.average: WeightAverage | None = None  # created after priming
        self._pending: list[tuple[int, torch.Tensor]] = []

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        paths = resolve_data(cfg.data)
        self.sp = load_tokenizer(paths.tokenizer, cfg.model.vocab_size)
        self.tokenizer_path = paths.tokenizer
        self.lut: ByteLUT = build_byte_lut(self.sp, cfg.model.vocab_size)
        self.train_files = find_shards(paths.dataset_dir, cfg.data.train_pattern)
        val_files = find_shards(paths.dataset_dir, cfg.data.val_pattern)
        self.val_tokens = load_val_tokens(val_files, cfg.eval_seq_len, cfg.model.vocab_size)
        self.loader = self._new_loader()
        torch.manual_seed(cfg.train.seed)
        self.base_model = GPT(cfg.model).to(self.device)
        self.model = self.base_model
        self.opt = Optimizers(self.base_model, cfg.optim, cfg.model.tie_embeddings, self.device)
        if self.device.type == "cuda" and cfg.train.compile:
            self.model = torch.compile(self.base_model, dynamic=False, fullgraph=True)
            self.opt.muon.ns = torch.compile(newton_schulz5)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _new_loader(self) -> DistributedTokenLoader:
        return DistributedTokenLoader(
            self.train_files,
            rank=self.info.rank,
            world_size=self.info.world_size,
            vocab_size=self.cfg.model.vocab_size,
            device=self.device,
        )

    def write_header(self) -> None:
        self.log.line(f"pgolf {__version__} python {platform.python_version()} torch {torch.__version__}")
        self.log.line(f"device:{self.device} world_size:{self.info.world_size} grad_accum_steps:{self.accum}")
        self.log.line(
            "Hyperparameters:\n" + "\n".join("  " + s for s in format_config(self.cfg).splitlines())
        )
        self.log.event(
            "data",
            train_shards=len(self.train_files),
            train_tokens=self.loader.stream.total,
            val_tokens=self.val_tokens.numel(),
            tokenizer=str(self.tokenizer_path),
        )
        self.log.event("model", model_params=count_parameters(self.base_model))

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self, step: int, elapsed_ms: float) -> torch.Tensor:
        tc = self.cfg.train
        total = torch.zeros((), device=self.device)
        for _ in range(self.accum):
            x, y = self.loader.next_batch(self.local_tokens, tc.seq_len)
            with autocast_for(self.device):
                loss = self.model(x, y)
            (loss / self.accum).backward()
            total += loss.detach()
        dist.average_gradients(self.opt.params)
        mul = lr_multiplier(
            step,
            elapsed_ms,
            iterations=tc.iterations,
            max_wallclock_ms=1000 * tc.max_wallclock_seconds,
            cfg=self.cfg.optim,
        )
        self.opt.step(mul, muon_momentum(step, self.cfg.optim))
        self.opt.zero_grad()
        if self.average is not None:
            self.average.update(self.base_model, step + 1, mul)
        return total / self.accum

    def prime(self) -> None:
        """Run ``warmup_steps`` real steps (to trigger compilation), then restore every state."""
        n = self.cfg.train.warmup_steps
        if n <= 0:
            return
        model_state = copy.deepcopy(self.base_model.state_dict())
        opt_state = copy.deepcopy(self.opt.state_dict())
        for i in range(n):
            self.train_step(0, 0.0)
            self.log.event("warmup", f"warmup_step:{i + 1}/{n}", warmup_step=i + 1)
        self.base_model.load_state_dict(model_state)
        self.opt.load_state_dict(opt_state)
        self.opt.zero_grad()
        self.loader = self._new_loader()

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def save_checkpoint(self, step: int, train_ms: float) -> None:
        self._flush_losses()
        if self.info.is_main:
            state = {
                "config": self.cfg.to_dict(),
                "step": step,
                "train_ms": train_ms,
                "model": self.base_model.state_dict(),
                "optim": self.opt.state_dict(),
                "loader": self.loader.stream.state(),
                "history": self.history,
                "average": self.average.state_dict(),
                "looping": self.base_model.looping,
            }
            with atomic_file(self.checkpoint_path()) as f:
                torch.save(state, f)
            self.log.event("checkpoint", step=step, path=str(self.checkpoint_path()))
        dist.barrier()

    def load_checkpoint(self) -> tuple[int, float]:
        path = self.checkpoint_path()
        if not self.resume or not path.exists():
            return 0, 0.0
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["config"] != self.cfg.to_dict():
            raise ConfigError(f"{path}: checkpoint was written with a different config; cannot resume")
        self.base_model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.loader.stream.load_state(state["loader"])
        self.history = list(state["history"])
        self.average.load_state_dict(state["average"])
        self.base_model.looping = bool(state["looping"])
        self.log.event("resume", step=state["step"], train_time_ms=round(state["train_ms"]))
        return int(state["step"]), float(state["train_ms"])

    # ---- loop --------------------------------------------------------------------------------
    def _flush_losses(self) -> None:
        if self._pending:
            values = torch.stack([t for _, t in self._pending]).tolist()
            steps = [s for s, _ in self._pending]
            self.history += [{"step": s, "train_loss": v} for s, v in zip(steps, values, strict=True)]
            self._pending = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def validate(self, model: torch.nn.Module | None = None) -> BpbResult:
        """Score ``model`` (default: the model being trained) on the validation tokens."""
        return evaluate(
            self.model if model is None else model,
            self.val_tokens,
            self.lut,
            seq_len=self.cfg.eval_seq_len,
            batch_tokens=self.cfg.eval.batch_tokens,
            device=self.device,
        )

    def run_loop(self) -> tuple[int, float, str]:
        tc = self.cfg.train
        cap_ms = 1000 * tc.max_wallclock_seconds
        step, train_ms = self.load_checkpoint()
        unit = "s" if cap_ms else "step"
        self.log.start_progress(tc.max_wallclock_seconds if cap_ms else tc.iterations, unit)
        stopped_by = "iterations"
        clock = TrainClock(train_ms, self._sync)
        while step < tc.iterations:
            elapsed = clock.elapsed_ms()
            if self._decide(step, elapsed, cap_ms):
                stopped_by = "wallclock"
                break
            self._pending.append((step + 1, self.train_step(step, elapsed)))
            step += 1
            elapsed = clock.elapsed_ms()
            if tc.log_every and (step % tc.log_every == 0 or step == 1):
                self._log_train(step, elapsed)
            self.log.progress(elapsed / 1000 if cap_ms else step)
            if tc.val_every and step % tc.val_every == 0 and step < tc.iterations:
                with clock.paused():
                    self._log_val(step, clock.ms)
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                with clock.paused():
                    self.save_checkpoint(step, clock.ms)
        train_ms = clock.stop()
        self._flush_losses()
        if stopped_by == "wallclock":
            self.log.event(
                "stop",
                f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{tc.iterations}",
                train_time_ms=round(train_ms, 1),
                step=step,
            )
        return step, train_ms, stopped_by

    def _decide(self, step: int, elapsed: float, cap_ms: float) -> bool:
        """Before each step, decide together with the other ranks (one all-reduce, and none when
        there is nothing to decide) whether to stop at the wall-clock cap, and whether to switch
        the middle-range loop on (once the fraction train.loop_from_frac of the budget is used).
        Returns True to stop."""
        tc = self.cfg.train
        loop_pending = bool(self.cfg.model.loop_repeats) and not self.base_model.looping
        if not cap_ms and not loop_pending:
            return False
        step_avg = elapsed / step if step else 0.0
        progress = elapsed / cap_ms if cap_ms else step / tc.iterations
        stop, start_loop = dist.any_rank(
            (bool(cap_ms) and elapsed + step_avg > cap_ms, loop_pending and progress >= tc.loop_from_frac),
            self.device,
        )
        if start_loop and not stop:
            self.base_model.looping = True
            depth = len(self.base_model.layer_order())
            self.log.event("loop", f"looping:on step:{step} virtual_layers:{depth}", step=step, depth=depth)
        return stop

    def _log_train(self, step: int, elapsed: float) -> None:
        self._flush_losses()
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
        r = self.validate()
        self.log.event(
            "val",
            f"step:{step}/{self.cfg.train.iterations} val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} "
            f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms",
            step=step,
            val_loss=r.val_loss,
            val_bpb=r.val_bpb,
            train_time_ms=round(train_ms, 1),
        )
        return r

    # ---- export and round trip ---------------------------------------------------------------
    def export(self, steps: int) -> tuple[Path, SizeReport]:
        path = self.out_dir / ARTIFACT_NAME
        if self.info.is_main:
            entries, stats = quantize_state_dict(self.base_model.state_dict(), self.cfg.export)
            meta = {
                "pgolf_version": __version__,
                "model": dataclasses.asdict(self.cfg.model),
                "preset": self.cfg.preset,
                "track": self.cfg.track,
                "steps": steps,
                "looping": self.base_model.looping,
                "export": dataclasses.asdict(self.cfg.export),
                "data": dataclasses.asdict(self.cfg.data),
                "eval": {**dataclasses.asdict(self.cfg.eval), "seq_len": self.cfg.eval_seq_len},
                "tokenizer_sha256": file_sha256(self.tokenizer_path),
                "tokenizer_vocab_size": self.sp.vocab_size(),
            }
            write_artifact(path, entries, meta, self.cfg.export.compressor, self.cfg.export.level)
            self.log.event(
                "quant",
                int8_params=stats.int8_params,
                raw_params=stats.raw_params,
                scale_floor_rows=f"{stats.floored_rows}/{stats.total_rows}",
            )
        dist.barrier()
        size = SizeReport(path.stat().st_size, code_bytes(), self.track.artifact_cap_bytes)
        self.log.event(
            "size", f"Serialized model int8+zlib: {size.model_bytes} bytes", bytes_model=size.model_bytes
        )
        self.log.event("size", f"Code size: {size.code_bytes} bytes", bytes_code=size.code_bytes)
        self.log.event(
            "size",
            f"Total submission size int8+zlib: {size.total_bytes} bytes "
            f"(cap {size.cap_bytes}, {'fits' if size.fits else 'OVER THE CAP'} by {abs(size.headroom)})",
            bytes_total=size.total_bytes,
            bytes_cap=size.cap_bytes,
            fits_cap=size.fits,
        )
        return path, size

    def roundtrip(self, path: Path) -> tuple[BpbResult, float]:
        loaded = load_model_from_artifact(path, self.device)
        self._sync()
        started = time.perf_counter()
        r = self.validate(loaded.model)
        seconds = time.perf_counter() - started
        self.log.event(
            "final",
            f"final_int8_zlib_roundtrip val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} "
            f"eval_time:{1000 * seconds:.0f}ms",
            val_loss=r.val_loss,
            val_bpb=r.val_bpb,
            eval_time_ms=round(1000 * seconds, 1),
        )
        self.log.event(
            "final_exact",
            f"final_int8_zlib_roundtrip_exact val_loss:{r.val_loss:.8f} val_bpb:{r.val_bpb:.8f}",
            val_loss=r.val_loss,
            val_bpb=r.val_bpb,
            val_tokens=r.tokens,
            val_bytes=r.bytes,
        )
        if seconds > self.track.eval_seconds:
            self.log.event(
                "eval_cap",
                f"eval_time {seconds:.1f}s is OVER the track's {self.track.eval_seconds:.0f}s",
                over=True,
            )
        return r, seconds

    def run(self) -> RunResult:
        self.setup()
        self.write_header()
        self.prime()
        self.average = WeightAverage(self.base_model, self.cfg.train)
        steps, train_ms, stopped_by = self.run_loop()
        applied = self.average.apply(self.base_model)
        self.log.event("averaging", f"averaging:{applied}", averaging=applied)
        pre = self._log_val(steps, train_ms)
        path, size = self.export(steps)
        rt, eval_s = self.roundtrip(path)
        result = RunResult(
            config=self.cfg,
            out_dir=self.out_dir,
            steps=steps,
            train_seconds=train_ms / 1000,
            tokens_seen=steps * self.cfg.train.batch_tokens,
            stopped_by=stopped_by,
            num_params=count_parameters(self.base_model),
            pre_quant=pre,
            roundtrip=rt,
            eval_seconds=eval_s,
            artifact_path=path,
            size=size,
            history=self.history,
        )
        if self.info.is_main:
            write_json_atomic(self.out_dir / "result.json", {**result.to_dict(), "history": self.history})
        self.log.close()
        return result


def train(
    cfg: RunConfig, *, out_dir: str | Path = "runs/default", resume: bool = False, echo: bool = True
) -> RunResult:
    """Train, export, reload and score one run; files go to ``out_dir`` (log, JSONL, artifact)."""
    info = dist.setup(cfg.train.device)
    trainer = Trainer(cfg, Path(out_dir), info, resume, echo)
    try:
        return trainer.run()
    finally:
        trainer.log.close()
