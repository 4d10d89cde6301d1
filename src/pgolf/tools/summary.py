"""The summary of a finished run (tooling): the lines ``pgolf train`` and ``pgolf demo`` print."""

from __future__ import annotations

from pgolf.train.result import RunResult


def run_summary(result: RunResult) -> str:
    """What ``pgolf train`` and ``pgolf demo`` print at the end of a run: its size, speed and scores,
    and its track verdict with every reason it is off track."""
    s, label, sp = result.size, result.score.label, result.score.split
    lines = [
        f"preset {result.config.preset} on track {result.config.track}",
        f"parameters            {result.num_params:,}",
        f"steps                 {result.steps} ({result.stopped_by} cap, {result.train_seconds:.1f} s)",
        f"tokens/s (train)      {result.tokens_per_second:,.0f}",
        f"{sp}_bpb pre-quant     {result.pre_quant.val_bpb:.4f}",
        f"{sp}_bpb {label} round trip {result.roundtrip.val_bpb:.4f}  ({result.roundtrip.tokens:,} tokens, "
        f"{result.roundtrip.bytes:,} bytes, eval {result.score.seconds:.1f} s)",
        f"quantisation gap      {gap:+.4f} (same windows, nothing adapting)"
        if (gap := result.quant_gap_bpb) is not None
        else "quantisation gap      not measured (train.windows_diagnostic)",
        f"artifact bytes        {s.total_bytes:,} = model {s.model_bytes:,} + code {s.code_bytes:,}",
        f"track                 {'on track' if result.on_track else 'OFF TRACK'} (bytes: {s.verdict()})",
    ]
    lines += [f"  off track: {reason}" for reason in result.off_track]
    if sp == "dev":
        lines.append("scored on the dev split (data.score_split=dev): tuning scores, not validation")
    return "\n".join(lines)
