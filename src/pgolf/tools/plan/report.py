"""``pgolf plan``: what a config will do on the paid machine, found on the CPU in seconds.

``make_plan`` builds the full-size model and runs one real forward/backward at full width and full
sequence length (batch 1, fp32, CPU) and one bf16-autocast forward/backward on fake tensors at the
real micro-batch, so shape and dtype errors surface here. It then projects, each figure with how
it was obtained: FLOPs per token (analytic, checked against torch's FlopCounterMode on the real
pass), step time, steps within the cap and tokens seen (``hardware``), peak memory per device
(``memory``), artifact bytes (``artifact``) and evaluation time (``evaltime``). ``Plan.problems``
lists every projection over a cap (the command exits 1); ``Plan.notes`` what to be wary of.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from pgolf import dist
from pgolf.config.run import RunConfig
from pgolf.errors import ConfigError
from pgolf.methods.windows import window_flops
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters
from pgolf.optim import Optimizers
from pgolf.tools.plan.artifact import project_artifact
from pgolf.tools.plan.evaltime import (
    EvalProjection,
    Rates,
    contest_val_tokens,
    project_eval,
    windows_of,
)
from pgolf.tools.plan.flops import Check, Flops, check_pass, count_flops
from pgolf.tools.plan.hardware import (
    CHECK_POINTS,
    EVAL_POINTS,
    GPU_RESERVED,
    TRAIN_POINTS,
    Hardware,
    TrainFit,
    fit_train,
    get_hardware,
    track_hardware,
)
from pgolf.tools.plan.memory import Memory, plan_memory
from pgolf.tools.presets import get_preset
from pgolf.tools.progress import Progress
from pgolf.tracks import get_track
from pgolf.train.schedule import muon_momentum


@dataclass
class Plan:
    preset: str
    track: str
    hardware: Hardware
    params: int
    flops: Flops
    flops_looping: Flops | None
    train_flops_per_token: float
    check: Check
    step_ms: float
    step_how: str
    step_error: float | None
    steps: int
    tokens: int
    memory: Memory
    artifact_upper: int
    artifact_projected: int
    code_bytes: int
    artifact_formats: dict
    cap_bytes: int
    evaluation: EvalProjection | None
    eval_cap: float
    fit: TrainFit | None = None
    cpu_bf16: bool = False
    """Training on this CPU runs under bf16 autocast (train.cpu_bf16 with AMX)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "track": self.track,
            "hardware": self.hardware.name,
            "params": self.params,
            "flops_per_token": {
                "forward_matmul": self.flops.matmul,
                "forward_attention": self.flops.attention,
                "train": self.train_flops_per_token,
                "train_looping": 3 * self.flops_looping.forward if self.flops_looping else None,
                "measured_train_matmul": self.check.matmul_train_flops,
            },
            "check": {"seq_len": self.check.seq_len, "loss": self.check.loss, "seconds": self.check.seconds},
            "step_ms": self.step_ms,
            "step_how": self.step_how,
            "step_error": self.step_error,
            "steps": self.steps,
            "tokens": self.tokens,
            "memory": self.memory.to_dict(),
            "device_memory": self.hardware.memory_bytes,
            "artifact": {
                "upper_bound": self.artifact_upper + self.code_bytes,
                "projected": self.artifact_projected + self.code_bytes,
                "code": self.code_bytes,
                "cap": self.cap_bytes,
                "formats": self.artifact_formats,
            },
            "eval": self.evaluation.to_dict() if self.evaluation else None,
            "eval_cap": self.eval_cap,
            "calibration": self.fit.points if self.fit else None,
            "problems": self.problems,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        hw, m, gib = self.hardware, self.memory, 2**30

        def mb(n: int) -> str:
            return f"{n / 1e6:,.2f} MB"

        err = (
            f" (±{100 * self.step_error:.0f}%: the fit's largest error on its calibration points)"
            if self.step_error
            else ""
        )
        out = [
            f"plan: {self.preset} on {hw.describe}, track {self.track}",
            f"check      forward/backward at seq {self.check.seq_len}, batch 1, fp32 CPU: loss "
            f"{self.check.loss:.4f} in {self.check.seconds:.1f} s; "
            f"{'bf16-autocast' if hw.is_gpu or self.cpu_bf16 else 'fp32'} pass on fake tensors at the "
            f"micro-batch {m.micro_batch[0]}x{m.micro_batch[1]}: ok",
            f"parameters {self.params:,}",
            f"FLOPs/tok  forward {self.flops.forward / 1e6:,.1f}M (matmul {self.flops.matmul / 1e6:,.1f}M + "
            f"attention {self.flops.attention / 1e6:,.1f}M at {self.flops.seq_len}); training "
            f"{self.train_flops_per_token / 1e6:,.1f}M; FlopCounterMode counted "
            f"{self.check.matmul_train_flops / 1e6:,.1f}M of matmul training FLOPs"
            + (" (loop on)" if self.flops_looping else ""),
        ]
        if self.flops_looping:
            out.append(
                f"           with the loop on: forward {self.flops_looping.forward / 1e6:,.1f}M "
                "(the training figure averages both by train.loop_from_frac)"
            )
        out += [
            f"step       {self.step_ms:,.1f} ms{err}; {self.step_how}",
            f"steps      {self.steps:,} in the cap; {self.tokens / 1e9:,.3f}B tokens seen",
            f"memory     {m.total / gib:,.2f} GiB per device of {hw.memory_bytes / gib:,.1f}: weights "
            f"{m.weights / gib:.2f}, grads {m.gradients / gib:.2f}, optimizer {m.optimizer / gib:.2f}, "
            f"averaging {m.averaging / gib:.2f}, activations {m.activations / gib:.2f}, logits transient "
            f"{m.transient / gib:.2f}",
            f"artifact   projected {mb(self.artifact_projected + self.code_bytes)} (trained bits/param per "
            f"format), upper bound {mb(self.artifact_upper + self.code_bytes)}, incl. {self.code_bytes:,} "
            f"code bytes; cap {mb(self.cap_bytes) if self.cap_bytes else 'none'}",
            "           "
            + ", ".join(
                f"{f} {v['params']:,} x {v['bits_per_param']}" for f, v in self.artifact_formats.items()
            ),
        ]
        if self.evaluation:
            ev = self.evaluation
            cap = f" of {self.eval_cap:g} s" if self.eval_cap else ""
            out.append(f"eval       {ev.method}: {ev.seconds:,.1f} s{cap} over {ev.val_tokens:,} tokens")
            out += [f"           {p:10s} {s:8.1f} s  {h}" for p, s, h in ev.parts]
        if self.fit:
            out.append(
                f"calibration (8xH100 step times; R = {self.fit.rate / 1e12:.0f} TFLOP/s per GPU, "
                f"c = {self.fit.fixed_ms:.1f} ms per step):"
            )
            out += [
                f"           {p['preset']:10s} measured {p['measured_ms']:6.2f} ms, fitted "
                f"{p['fitted_ms']:6.2f} ({p['residual_pct']:+.1f}%), left out {p['loo_ms']:6.2f} "
                f"({p['loo_pct']:+.1f}%)"
                for p in self.fit.points
            ]
        out += [f"note: {n}" for n in self.notes]
        out += [f"OVER: {p}" for p in self.problems]
        return out


def _train_flops(model: GPT, cfg: RunConfig) -> tuple[Flops, Flops | None]:
    """Training FLOPs of the flat model and, when the middle loop exists, of the looped one."""
    seq = cfg.train.seq_len
    flat = count_flops(model, seq, looping=False)
    return flat, count_flops(model, seq, looping=True) if cfg.model.loop_repeats else None


def calibrate() -> TrainFit:
    per_gpu = {}
    for point in TRAIN_POINTS:
        cfg = get_preset(point.preset)
        with torch.device("meta"):
            model = GPT(cfg.model)
        per_gpu[point.preset] = count_flops(model, cfg.train.seq_len).train * cfg.train.batch_tokens / 8
    return fit_train(per_gpu)


def eval_score_rate() -> float:
    """Forward FLOPs per second of 8 GPUs, from EVAL_POINTS (their mean if more than one)."""
    rates = []
    for point in EVAL_POINTS:
        cfg = get_preset(point.preset)
        with torch.device("meta"):
            model = GPT(cfg.model)
        flops = count_flops(model, cfg.eval_seq_len, looping=cfg.model.loop_repeats > 0)
        method = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, method=point.method))
        rates.append(window_flops(flops, windows_of(method, point.val_tokens, None)) / point.seconds)
    return sum(rates) / len(rates)


def _fastest(fn, repeats: int = 3, budget_s: float = 2.0) -> float:
    """The fastest of up to ``repeats`` timed calls, stopping once ``budget_s`` is spent (noisy CPUs)."""
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return best


TIMED_TOKENS = 4096
"""The CPU is timed on at most this many tokens of the micro-batch (whole sequences) and scaled:
per-token speed is flat in the batch at these sizes, and a full-size micro-batch would not fit."""


def _time_cpu(model: GPT, cfg: RunConfig, bf16: bool) -> tuple[float, float, float]:
    """(training tokens/s, scoring tokens/s, optimizer ms) of this CPU at the run's sequence length."""
    tc = cfg.train
    batch = min(tc.batch_tokens // tc.microbatches // tc.seq_len, max(1, TIMED_TOKENS // tc.seq_len))
    ids = torch.randint(0, cfg.model.vocab_size, (batch, tc.seq_len + 1))
    opt = Optimizers(model, cfg.optim, cfg.model.tie_embeddings, torch.device("cpu"))

    # training under bf16 autocast where the trainer would use it (``bf16``); scoring stays fp32
    def train_pass() -> None:
        with dist.autocast_for(torch.device("cpu"), bf16):
            loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()

    train_pass()  # untimed: first-call costs
    train_s = _fastest(train_pass)
    opt_ms = 1e3 * _fastest(lambda: opt.step(1.0, muon_momentum(0, cfg.optim)))
    opt.zero_grad()
    with torch.no_grad():
        score_s = _fastest(lambda: model(ids[:, :-1]))
    n = batch * tc.seq_len
    return n / train_s, n / score_s, opt_ms


@dataclass
class StepTimes:
    flat_ms: float
    looped_ms: float | None
    error: float | None
    how: str
    rates: Rates
    fit: TrainFit | None

    def steps(self, cfg: RunConfig) -> tuple[int, float, float]:
        """Steps within the cap less the GPTQ reserve, the mean step time, and the share of steps
        run flat: the loop switches on at the wall-clock fraction train.loop_from_frac."""
        tc = cfg.train
        if self.looped_ms is None:
            flat_s, looped_s = 1.0, 0.0
        else:
            flat_s, looped_s = tc.loop_from_frac / self.flat_ms, (1 - tc.loop_from_frac) / self.looped_ms
        per_ms = flat_s + looped_s  # steps per ms of the cap, on average
        if not tc.max_wallclock_seconds:
            return tc.iterations, 1 / per_ms if self.looped_ms else self.flat_ms, flat_s / per_ms
        reserve = cfg.quant.gptq_reserve_seconds if cfg.quant.calibrates else 0.0
        cap = 1e3 * (tc.max_wallclock_seconds - reserve)
        n = cap * per_ms if self.looped_ms else cap / self.flat_ms
        return min(tc.iterations, int(n)), cap / n, flat_s / per_ms


def _project_step(
    model: GPT, cfg: RunConfig, hw: Hardware, flops: tuple, notes: list[str], cpu_bf16: bool = False
) -> StepTimes:
    tc = cfg.train
    flat, looped = flops
    if not hw.is_gpu:
        times = []
        for looping in (False, True) if looped else (False,):
            model.looping = looping
            times.append(_time_cpu(model, cfg, cpu_bf16))
        model.looping = looped is not None
        train_tps, score_tps, opt_ms = times[-1]
        how = (
            f"timed here: {train_tps:,.0f} training tokens/s at seq {tc.seq_len}"
            f"{' (bf16 autocast, train.cpu_bf16)' if cpu_bf16 else ''} + "
            f"{opt_ms:.0f} ms optimizer"
        )
        fwd = (looped or flat).forward
        rates = Rates(score_tps * fwd, train_tps * 3 * fwd, opt_ms, ranks=1)
        ms = [1e3 * tc.batch_tokens / t[0] + t[2] for t in times]
        return StepTimes(ms[0], ms[1] if looped else None, None, how, rates, None)
    fit = calibrate()
    per_gpu = [f.train * tc.batch_tokens / hw.gpus for f in (flat, looped) if f is not None]
    lo = min(p["tflops_per_gpu"] for p in fit.points)
    hi = max(p["tflops_per_gpu"] for p in fit.points)
    loop = f" with the loop off, {per_gpu[1] / 1e12:,.2f} with it on" if len(per_gpu) > 1 else ""
    how = (
        f"{per_gpu[0] / 1e12:,.2f} TFLOPs per GPU per step{loop} at the records' rate (fitted on "
        f"{lo:g}-{hi:g}; leave-one-out error up to {100 * fit.loo_error:.0f}%)"
    )
    if any(not lo * 0.8 <= f / 1e12 <= hi * 1.25 for f in per_gpu):
        which = " (the loop on)" if len(per_gpu) > 1 and per_gpu[1] > per_gpu[0] else ""
        notes.append(
            f"{max(per_gpu) / 1e12:,.2f} TFLOPs per GPU per step{which} is outside the calibrated "
            f"range ({lo:g}-{hi:g}): the step time is an extrapolation"
        )
    notes.append(
        "GPU figures project the records' measured speed onto this config; pgolf's CUDA path "
        "is unmeasured (its residual stream is fp32; the records cast to bf16)"
    )
    for point in CHECK_POINTS:
        if point.preset == cfg.preset and hw.gpus == 1:
            notes.append(f"check point: {point.source}; projected here {fit.step_ms(per_gpu[0]):,.0f} ms")
    rates = Rates(eval_score_rate() * hw.gpus / 8, fit.rate * hw.gpus, fit.fixed_ms, ranks=hw.gpus)
    times = [fit.step_ms(f) for f in per_gpu]
    return StepTimes(times[0], times[1] if looped else None, fit.error, how, rates, fit)


def make_plan(
    cfg: RunConfig,
    hardware: str | None = None,
    val_tokens: int | None = None,
    tokens: torch.Tensor | None = None,
) -> Plan:
    """The plan of ``cfg`` on ``hardware`` (default: its track's machine). ``tokens`` (the validation
    stream) makes the eval projection exact for document methods; ``val_tokens`` sets its length."""
    track, tc = get_track(cfg.track), cfg.train
    hw = get_hardware(hardware or track_hardware(track))
    if hw.gpus > 1 and tc.microbatches % hw.gpus:
        raise ConfigError(f"{hw.gpus} GPUs must divide train.microbatches={tc.microbatches}")
    n_val = val_tokens or (tokens.numel() if tokens is not None else None)
    if n_val is None:
        n_val = contest_val_tokens(cfg.data.dataset)
    with Progress("plan", total=4 + bool(n_val), unit="stage") as progress:
        progress.stage("the model's check pass")
        torch.manual_seed(tc.seed)
        model = GPT(cfg.model)
        model.looping = cfg.model.loop_repeats > 0
        check = check_pass(model, tc.seq_len, cfg.model.vocab_size, tc.seed)
        progress.stage("FLOPs and memory")
        flat, looped = _train_flops(model, cfg)
        cpu_bf16 = not hw.is_gpu and tc.cpu_bf16 and dist.cpu_has_amx()
        memory = plan_memory(cfg, bf16=hw.is_gpu or cpu_bf16)
        notes: list[str] = []
        progress.stage("the step time" + (" (timing this CPU)" if not hw.is_gpu else ""))
        times = _project_step(model, cfg, hw, (flat, looped), notes, cpu_bf16)
        steps, step_ms, flat_share = times.steps(cfg)
        train_flops = (
            flat.train if looped is None else flat_share * flat.train + (1 - flat_share) * looped.train
        )
        progress.stage("the artifact's bytes")
        est, projected, formats = project_artifact(cfg)
        evaluation = None
        if n_val:
            progress.stage("the evaluation time")
            eval_flops = count_flops(model, cfg.eval_seq_len, looping=cfg.model.loop_repeats > 0)
            evaluation = project_eval(cfg, eval_flops, times.rates, n_val, tokens)
        else:
            notes.append(
                "evaluation not projected (no validation stream): pass --val-tokens N or build the data"
            )
    plan = Plan(
        preset=cfg.preset,
        track=cfg.track,
        hardware=hw,
        params=count_parameters(model),
        flops=flat,
        flops_looping=looped,
        train_flops_per_token=train_flops,
        check=check,
        step_ms=step_ms,
        step_how=times.how,
        step_error=times.error,
        steps=steps,
        tokens=steps * tc.batch_tokens,
        memory=memory,
        artifact_upper=est.upper_bound_bytes,
        artifact_projected=projected,
        code_bytes=est.code_bytes,
        artifact_formats=formats,
        cap_bytes=track.artifact_cap_bytes,
        evaluation=evaluation,
        eval_cap=track.eval_seconds,
        fit=times.fit,
        cpu_bf16=cpu_bf16,
        notes=notes,
    )
    _judge(plan, cfg)
    return plan


def _judge(plan: Plan, cfg: RunConfig) -> None:
    """The plan's problems: the track's verdict (``Track.judge``) on the configured training cap and on
    the projected bytes and evaluation time, as ``pgolf train`` judges the run; then the memory and
    the steps."""
    track, tc = get_track(cfg.track), cfg.train
    p = plan.problems
    p += track.judge(train_cap_seconds=tc.max_wallclock_seconds)
    over_bytes = track.judge(total_bytes=plan.artifact_projected + plan.code_bytes)
    seconds = plan.evaluation.seconds if plan.evaluation else None
    p += [f"projected: {r}" for r in over_bytes + track.judge(eval_seconds=seconds)]
    if not over_bytes and track.judge(total_bytes=plan.artifact_upper + plan.code_bytes):
        plan.notes.append("the artifact's upper bound is over the cap: only compression keeps it inside")
    usable = plan.hardware.memory_bytes - (GPU_RESERVED if plan.hardware.is_gpu else 0)
    if plan.hardware.memory_bytes and plan.memory.total > usable:
        p.append(
            f"peak memory {plan.memory.total / 2**30:,.1f} GiB per device, over the "
            f"{usable / 2**30:,.1f} GiB usable (raise train.microbatches)"
        )
    if plan.steps < 1:
        p.append(f"a step ({plan.step_ms:,.0f} ms) does not fit the training cap")
    elif tc.max_wallclock_seconds and not cfg.optim.warmdown_frac and plan.steps < cfg.optim.warmdown_iters:
        plan.notes.append(
            f"{plan.steps:,} steps is under optim.warmdown_iters={cfg.optim.warmdown_iters}: "
            "the wall-clock warm-down starts at step 0"
        )
