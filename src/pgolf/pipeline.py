"""``run(cfg)``: train -> pack -> round-trip score -> judge. What ``pgolf train`` runs, and, with
``eval.artifact``, the entry point of the counted code.

The reported score is the round trip: the artifact written to disk, read back into a new model with
nothing from training, and scored on the validation set. The run is judged against its track: the
configured and measured training time, the evaluation time and the bytes; anything outside a cap
is recorded in ``result.json`` as off track.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from pgolf import __version__, dist
from pgolf.config.run import RunConfig
from pgolf.data.valset import ValidationSet
from pgolf.errors import ConfigError, Interrupted
from pgolf.eval.artifact import load_artifact, score_loaded
from pgolf.eval.bpb import BpbResult
from pgolf.eval.score import EvalClock, ScoreReport
from pgolf.fileio import write_json_atomic
from pgolf.model.params import count_parameters, param_roles
from pgolf.pack.bundle import code_account
from pgolf.pack.format import PackSpec, pack_spec, write_artifact
from pgolf.pack.meta import ArtifactMeta
from pgolf.pack.size import SizeReport
from pgolf.quant.export import QuantStats, quantize_state_dict
from pgolf.quant.grid import QTensor
from pgolf.runlog import RunLog
from pgolf.tracks import CONTEST, get_track
from pgolf.train.calibration import Calibration
from pgolf.train.checkpoint import CHECKPOINT_NAME
from pgolf.train.result import RunResult
from pgolf.train.trainer import Trainer, TrainOutcome

ARTIFACT_NAME = "artifact.pgolf"
RESULT_NAME = "result.json"
WEIGHTS_NAME = "weights.pgolf"


def artifact_meta(
    cfg: RunConfig, valset: ValidationSet, *, steps: int, looping: int, train_seconds: float
) -> ArtifactMeta:
    """The meta of an artifact of ``cfg``'s model, scored on ``valset``."""
    code = code_account(cfg)
    return ArtifactMeta(
        pgolf_version=__version__,
        preset=cfg.preset,
        track=cfg.track,
        steps=steps,
        looping=looping,
        model=cfg.model,
        data=cfg.data,
        eval=dataclasses.replace(cfg.eval, seq_len=cfg.eval_seq_len, val_docs=0),  # the official scoring
        quant=cfg.quant,
        pack=cfg.pack,
        tokenizer_sha256=valset.tokenizer_sha256,
        tokenizer_vocab_size=valset.tokenizer_vocab_size,
        val_tokens=valset.tokens.numel(),
        val_sha256=valset.sha256,
        code_form=code.form,
        code_bytes=code.bytes,
        code_sha256=code.sha256,
        sources_sha256=code.sources_sha256,
        train_seconds=train_seconds,
        train_cap_seconds=cfg.train.max_wallclock_seconds,
    )


def export_model(
    model: torch.nn.Module, cfg: RunConfig, meta: ArtifactMeta, path: Path, calibration: Calibration | None
) -> QuantStats:
    """Quantise ``model``'s weights under ``cfg.quant`` by their declared roles (GPTQ and the Fisher
    allocation from the calibration, where given) and write the artifact."""
    c = calibration or Calibration()
    state, roles = model.state_dict(), param_roles(model)
    entries, stats = quantize_state_dict(state, roles, cfg.quant, c.hessians, c.sensitivities, c.tokens)
    write_artifact(path, entries, meta.to_dict(), pack_spec(cfg.pack))
    return stats


def save_weights(trainer: Trainer, outcome: TrainOutcome) -> None:
    """The float weights and the config of the run (``weights.pgolf``, no pickle), so that ``pgolf
    pack`` can re-pack it under another policy without retraining. Not part of the artifact."""
    state = trainer.base_model.state_dict()
    entries = {k: QTensor("raw", v.detach().float().cpu(), v.dtype, fmt="fp32") for k, v in state.items()}
    meta = {
        "config": trainer.cfg.to_dict(),
        "steps": outcome.steps,
        "looping": trainer.base_model.loop_passes,
        "train_seconds": outcome.train_ms / 1000,
        "calibration_seconds": outcome.calibration_ms / 1000,
        "pre_quant_val_loss": outcome.pre_quant.val_loss,
        "pre_quant_val_bpb": outcome.pre_quant.val_bpb,
    }
    write_artifact(trainer.out_dir / WEIGHTS_NAME, entries, meta, PackSpec("zlib", 1))


def pack(trainer: Trainer, outcome: TrainOutcome) -> tuple[Path, SizeReport, ArtifactMeta]:
    """Write the artifact and the run's float weights (rank 0) and account the artifact's bytes."""
    cfg, path = trainer.cfg, trainer.out_dir / ARTIFACT_NAME
    meta = artifact_meta(
        cfg,
        trainer.valset,
        steps=outcome.steps,
        looping=trainer.base_model.loop_passes,
        train_seconds=outcome.train_ms / 1000,
    )
    if trainer.info.is_main:
        save_weights(trainer, outcome)
        stats = export_model(trainer.base_model, cfg, meta, path, outcome.calibration)
        trainer.log.event(
            "quant",
            stats.summary(),
            params=dict(stats.params),
            floored_rows=stats.floored_rows,
            gptq_damped=stats.gptq_damped,
        )
    dist.barrier()
    size = SizeReport(path.stat().st_size, meta.code_bytes, get_track(cfg.track).artifact_cap_bytes)
    model_line, code_line, total_line = size.log_lines(meta.size_label)
    trainer.log.event("size", model_line, bytes_model=size.model_bytes)
    trainer.log.event("size", code_line, bytes_code=size.code_bytes)
    trainer.log.event(
        "size", total_line, bytes_total=size.total_bytes, bytes_cap=size.cap_bytes, fits_cap=size.fits
    )
    return path, size, meta


def roundtrip(trainer: Trainer, path: Path) -> tuple[ScoreReport, BpbResult | None]:
    """Read the artifact back into a new model and score it; the load is on the eval clock. When
    the method adapts (TTT, experts, tilt), a fresh copy is also scored with the window plan alone
    (a diagnostic, off the eval clock): that is the score the quantisation gap compares with the
    pre-quant one."""
    device = trainer.device
    dist.reset_peak_memory(device)  # the eval's own peak, not the export's
    echo = lambda line: trainer.log.event(line.split(":")[0], line)  # noqa: E731 (eval_projection, eval_targets)
    clock = EvalClock(dist.synchronizer(device), echo=echo, cap_s=get_track(trainer.cfg.track).eval_seconds)
    with clock.phase("load"):
        loaded = load_artifact(path, device, trainer.attention)
    ev = dataclasses.replace(loaded.meta.eval, val_docs=trainer.cfg.eval.val_docs)  # the run's subset, if any
    report = score_loaded(loaded, trainer.valset, ev, device, clock)
    dist.log_peak_memory(trainer.log, "eval", device, trainer.memory)
    r = report.result
    kinds = ("final", "final_exact") if report.official else ("final_unofficial",)  # a subset (eval.val_docs)
    for kind, line in zip(kinds, report.log_lines(), strict=True):
        trainer.log.event(
            kind,
            line,
            val_loss=r.val_loss,
            val_bpb=r.val_bpb,
            val_tokens=r.tokens,
            val_bytes=r.bytes,
            eval_time_ms=round(1000 * report.seconds, 1),
        )
    wanted = trainer.cfg.train.windows_diagnostic
    if not loaded.meta.eval.adapts or wanted == "off" or (wanted == "auto" and trainer.cfg.track == CONTEST):
        return report, None
    fresh = load_artifact(path, device, trainer.attention)
    plain = score_loaded(fresh, trainer.valset, ev.windows_only, device, EvalClock()).result
    s = trainer.valset.split
    line = f"diagnostic_{loaded.meta.label}_windows_only_roundtrip {s}_loss:{plain.val_loss:.8f} "
    trainer.log.event("windows_roundtrip", line + f"{s}_bpb:{plain.val_bpb:.8f}", val_bpb=plain.val_bpb)
    return report, plain


RUN_FILES = (ARTIFACT_NAME, RESULT_NAME, WEIGHTS_NAME, CHECKPOINT_NAME, "train.log", "events.jsonl")
"""What a run writes into its folder: the files a second run there would replace or append to."""


def run_files(out: Path) -> list[str]:
    """The ``RUN_FILES`` present in ``out`` (empty: it holds no run)."""
    return [name for name in RUN_FILES if (out / name).exists()]


def claim(out: Path, *, resume: bool, force: bool, is_main: bool) -> None:
    """Refuse a folder that holds another run's files unless resuming it (which needs its checkpoint)
    or replacing it (``force``: rank 0 removes them first, so no log is appended to)."""
    present = run_files(out)
    if resume:
        if CHECKPOINT_NAME not in present:
            raise ConfigError(
                f"{out}: no {CHECKPOINT_NAME} to resume from (a run writes one every "
                "train.checkpoint_every steps); start afresh with --force or another --out"
            )
        return
    if present and not force:
        raise ConfigError(
            f"{out} holds another run ({', '.join(present)}): --resume continues it from its checkpoint, "
            "--force replaces it, or choose another --out"
        )
    if present and is_main:
        for name in present:
            (out / name).unlink()


def run(
    cfg: RunConfig,
    *,
    out_dir: str | Path = "runs/default",
    resume: bool = False,
    force: bool = False,
    echo: bool = True,
    notes: tuple[str, ...] = (),
) -> RunResult:
    """Train, pack, reload and score one run; files go to ``out_dir`` (log, JSONL, artifact, result),
    which must not hold another run (``claim``); ``notes`` open the log (e.g. why it runs off track)."""
    if cfg.eval.val_leak:
        raise ConfigError(
            "eval.val_leak is for `pgolf eval --val-leak` on a finished artifact; a run's own score never "
            "reads validation targets"
        )
    started_at = time.time()
    info = dist.setup(cfg.train.device)
    out = Path(out_dir)
    claim(out, resume=resume, force=force, is_main=info.is_main)
    dist.barrier()
    log = RunLog(out, enabled=info.is_main, echo=echo)
    for note in notes:
        log.event("note", note, note=note)
    stage, trainer = "setting up", None
    try:
        trainer = Trainer(cfg, out, info, log, resume)
        stage = "training"
        outcome = trainer.fit()
        stage = "packing"
        path, size, meta = pack(trainer, outcome)
        stage = "evaluating the round trip"
        report, windows_only = roundtrip(trainer, path)
        off = get_track(cfg.track).judge(
            train_cap_seconds=cfg.train.max_wallclock_seconds,
            train_seconds=outcome.train_ms / 1000,
            eval_seconds=report.seconds,
            total_bytes=size.total_bytes,
            val_leak=report.val_leak,
        )
        for reason in off:
            log.event("off_track", f"OFF TRACK: {reason}", reason=reason)
        result = RunResult(
            config=cfg,
            out_dir=out,
            steps=outcome.steps,
            train_seconds=outcome.train_ms / 1000,
            tokens_seen=outcome.steps * cfg.train.batch_tokens,
            stopped_by=outcome.stopped_by,
            num_params=count_parameters(trainer.base_model),
            pre_quant=outcome.pre_quant,
            score=report,
            artifact_path=path,
            size=size,
            off_track=off,
            code_sha256=meta.code_sha256,
            started_at=started_at,
            history=trainer.history,
            windows_roundtrip=windows_only,
            peak_memory=trainer.memory,
        )
        if info.is_main:
            write_json_atomic(out / RESULT_NAME, {**result.to_dict(), "history": trainer.history})
        return result
    except KeyboardInterrupt:
        raise interrupted(out, stage, trainer, log) from None
    finally:
        log.close()


def interrupted(out: Path, stage: str, trainer: Trainer | None, log: RunLog) -> Interrupted:
    """What a Ctrl-C left: where the run stopped and what can be picked up (no result.json is written,
    so nothing looks finished): the checkpoint a --resume continues from, else a written artifact
    (``pgolf eval``) or float weights (``pgolf pack``), else nothing."""
    step = f" at step {trainer.step}" if trainer is not None and stage == "training" else ""
    saved = trainer.saved_step if trainer is not None else None
    checkpoint, artifact = out / CHECKPOINT_NAME, out / ARTIFACT_NAME
    if checkpoint.exists():
        what = (
            f"the last checkpoint, {checkpoint}, holds step {saved}"
            if saved is not None
            else (f"{checkpoint} is intact")
        )
    elif stage == "evaluating the round trip" and artifact.exists():
        what = f"the artifact is written: `pgolf eval {artifact}` scores it"
    elif stage != "training" and (out / WEIGHTS_NAME).exists():
        what = f"the trained weights are written: `pgolf pack {out}` packs and scores them"
    else:
        what = "no checkpoint was written (train.checkpoint_every): nothing to resume; --force starts again"
    where = f"interrupted while {stage}{step}"
    log.event("interrupted", f"{where}; {what}", stage=stage, checkpoint_step=saved)
    return Interrupted(f"{where}; {what}", resumable=checkpoint.exists())
