"""``pgolf record``: seeds of one configuration, run by the bundled ``train_gpt.py`` itself, into a
records folder laid out as the contest's (users-ecosystem §2.3-2.4).

Order matters for the compliance check: the bundled file and ``seeds.json`` (the declared seeds and
the time of declaration) are written before the first run; each seed then runs as
``python train_gpt.py`` (or ``torchrun --standalone --nproc_per_node=N train_gpt.py``) in the
folder with ``SEED`` set, its console captured to ``train_seed<S>.log``; its ``result.json`` and
artifact are kept as ``result_seed<S>.json`` and ``artifact_seed<S>.pgolf``. ``submission.json``
and ``README.md`` come last, with the compliance report of ``pgolf check``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pgolf.config.run import RunConfig, config_from_dict
from pgolf.data.paths import data_root
from pgolf.errors import PgolfError
from pgolf.fileio import write_bytes_atomic, write_json_atomic
from pgolf.pack.bundle import build_bundle
from pgolf.tools.data.commands import require_data
from pgolf.tools.records.check import Rule, check
from pgolf.tools.records.logs import RunScore, from_result
from pgolf.tracks import get_track

GITIGNORE = b"runs/\n*.pgolf\n"
"""A record folder keeps its runs' folders and artifacts out of git."""


@dataclasses.dataclass(frozen=True)
class RecordInfo:
    name: str
    author: str = ""
    github_id: str = ""
    blurb: str = ""


def record_dir(root: Path, cfg: RunConfig, name: str, date: dt.date | None = None) -> Path:
    return root / cfg.track / f"{(date or dt.date.today()).isoformat()}_{name}"


def data_root_of(cfg: RunConfig) -> str:
    """The data root the runs read, absolute (the folder is their working directory)."""
    return str(data_root(cfg.data).resolve())


def _clean_environment() -> dict[str, str]:
    """The environment without anything that would change the baked config: the record is the
    preset its README names, whatever the caller's shell exports."""
    from pgolf.entry import CONTEST_ENV

    drop = set(CONTEST_ENV) | {"RUN_ID", "OUT_DIR"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PGOLF_")}


def run_seed(folder: Path, seed: int, data_root: str, nproc: int) -> RunScore:
    """One seed, by the bundled file, from the folder; the console goes to train_seed<S>.log."""
    folder = folder.resolve()
    out = folder / "runs" / f"seed{seed}"
    env = {**_clean_environment(), "SEED": str(seed), "OUT_DIR": str(out), "PGOLF_DATA_ROOT": data_root}
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"
    ]
    with open(folder / f"train_seed{seed}.log", "w", encoding="utf-8") as log:  # a console capture
        proc = subprocess.Popen([*launcher, "train_gpt.py"], cwd=folder, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                print(line, end="", flush=True)
        except BaseException:  # Ctrl-C, or a worker's SIGTERM: the seed's run stops with it
            proc.terminate()
            proc.wait()
            raise
        if proc.wait() == 2:
            raise PgolfError(f"seed {seed}: train_gpt.py refused its input (see {log.name})")
    if not (out / "result.json").is_file():
        raise PgolfError(f"seed {seed}: the run ended without a result (see train_seed{seed}.log)")
    for src, dst in (("result.json", "result"), ("artifact.pgolf", "artifact")):
        write_bytes_atomic(folder / f"{dst}_seed{seed}{Path(src).suffix}", (out / src).read_bytes())
    return from_result(folder / f"result_seed{seed}.json")


def hardware_name() -> str:
    """This machine's accelerator and architecture, as ``submission.json`` names them. The GPU's name
    is asked in a child process, so that this one (which may run more seeds) holds no CUDA context."""
    gpu = f"{os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        probe = "import torch; print(torch.cuda.get_device_name())"
        gpu = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    return f"{gpu} ({platform.machine()})"


def submission(
    cfg: RunConfig, info: RecordInfo, scores: list[RunScore], rules: list[Rule], code: int,
    against: dict | None = None, hardware: str = "",
) -> dict:
    """The fields real records use (a superset: the baseline's keys, seed_results, compliance), the
    dataset's name and, when the record was compared with a reference, that comparison. ``hardware``:
    what the seeds ran on (default: this machine)."""
    bpb, loss = np.array([s.val_bpb for s in scores]), np.array([s.val_loss for s in scores])
    std = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    return {
        "author": info.author, "github_id": info.github_id, "name": info.name, "blurb": info.blurb,
        "date": dt.date.today().isoformat(), "track": cfg.track, "preset": cfg.preset,
        "dataset": Path(cfg.data.dataset).name,
        "val_bpb": float(bpb.mean()), "val_loss": float(loss.mean()), "val_bpb_std": std(bpb),
        "val_loss_std": std(loss), "seeds": [s.seed for s in scores],
        "seed_results": {str(s.seed): {
            "val_loss": s.val_loss, "val_bpb": s.val_bpb, "artifact_bytes": s.bytes_total - s.bytes_code,
            "bytes_total": s.bytes_total, "steps": s.steps, "train_time_s": s.train_seconds,
            "eval_time_s": s.eval_seconds,
            "step_avg_ms": round(1000 * s.train_seconds / s.steps, 2) if s.steps else None,
        } for s in scores},
        "bytes_total": max(s.bytes_total for s in scores), "bytes_code": code,
        "hardware": hardware or hardware_name(), "pytorch_version": torch.__version__,
        "compliance": {r.name: r.status for r in rules},
        **({"against": against} if against else {}),
    }


def made_with(cfg: RunConfig, seeds: list[int], name: str) -> str:
    """The ``pgolf record`` command of this record: its preset, then every field where the runs'
    config differs from the preset's, as flags (the seed and the data root aside: each run's SEED and
    the machine's data are not the recipe)."""
    from pgolf.errors import ConfigError
    from pgolf.tools.config_files import as_flag, differences, resolve

    command = f"pgolf record --preset {shlex.quote(cfg.preset)}"
    try:
        diff = differences(cfg, resolve(cfg.preset))
    except ConfigError:  # a config file's preset is the file's name: its fields are the bundle's CONFIG
        return (
            f"{command}.toml (a config file) --seeds {','.join(map(str, seeds))} --name {shlex.quote(name)}"
        )
    flags = "".join(
        f" --{k} {shlex.quote(as_flag(v))}" for k, v in diff.items() if k not in ("train.seed", "data.root")
    )
    return f"{command}{flags} --seeds {','.join(map(str, seeds))} --name {shlex.quote(name)}"


def readme(cfg: RunConfig, info: RecordInfo, sub: dict, rules: list[Rule], comparison: list[str]) -> str:
    track = get_track(cfg.track)
    rows = "\n".join(
        f"| {seed} | {r['val_loss']:.8f} | {r['val_bpb']:.8f} | {r['steps']} | {r['train_time_s']:.1f} | "
        f"{r['eval_time_s']:.1f} | {r['bytes_total']:,} |"
        for seed, r in sub["seed_results"].items()
    )
    checks = "\n".join(f"- **{r.status.upper()}** {r.name}: {r.detail}" for r in rules)
    compare = (
        "\n".join(["", "## Against the reference", "", "```", *comparison, "```", ""]) if comparison else ""
    )
    return f"""# {info.name}

pgolf preset `{cfg.preset}` on the `{cfg.track}` track
({track.hardware}: {track.train_seconds:g} s training, {track.eval_seconds:g} s evaluation,
{track.artifact_cap_bytes:,} bytes). {info.blurb}

**val_bpb {sub["val_bpb"]:.5f} ± {sub["val_bpb_std"]:.5f}** (mean ± std over {len(sub["seeds"])} seeds),
val_loss {sub["val_loss"]:.5f} nats; every seed ran the bundled `train_gpt.py` of this folder
({sub["bytes_code"]:,} bytes, counted), {sub["hardware"]}, torch {sub["pytorch_version"]}.

| seed | val_loss | val_bpb | steps | train s | eval s | bytes total |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

## Run it

```
SEED=1337 python train_gpt.py          # or: torchrun --standalone --nproc_per_node=N train_gpt.py
```
The data root is `./data` (or `PGOLF_DATA_ROOT=/path`); the contest's variables (`DATA_PATH`,
`TOKENIZER_PATH`, `SEED`, `MAX_WALLCLOCK_SECONDS`, ...) adjust the baked config. Made with
`{made_with(cfg, sub["seeds"], info.name)}`.
{compare}
## Compliance (`pgolf check`)

{checks}
"""


def make_record(
    cfg: RunConfig, seeds: list[int], info: RecordInfo, *, root: Path = Path("records"), nproc: int = 1,
    comparison=None,
) -> tuple[Path, list[Rule]]:
    """Run the seeds into a new record folder; returns it and its compliance rules. ``comparison``:
    called with the seeds' scores, returns a comparison with a reference (``commands._against``)."""
    folder = declare_record(cfg, seeds, info, root=root)
    for s in seeds:
        run_seed(folder, s, data_root_of(cfg), nproc)
    return folder, finalize_record(folder, info, comparison)


def declare_record(
    cfg: RunConfig, seeds: list[int], info: RecordInfo, *, root: Path = Path("records")
) -> Path:
    """A new record folder with its bundled file and its declared seeds, before any run."""
    if len(seeds) != len(set(seeds)) or not seeds:
        raise PgolfError(f"--seeds must be distinct, got {seeds}")
    if not get_track(cfg.track).official:
        raise PgolfError(f"track {cfg.track!r} has no caps: a record needs an official track")
    if cfg.data.score_split != "val":
        raise PgolfError("data.score_split=dev: a record is scored on validation (tune on dev, record on val)")
    require_data(cfg.data)  # before a folder exists: a rerun with the data built takes the same --name
    folder = record_dir(root, cfg, info.name)
    if (folder / "seeds.json").exists():
        raise PgolfError(f"{folder} already holds a record (seeds.json); choose another --name")
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / "train_gpt.py", build_bundle(cfg, cfg.pack.code_form).encode("utf-8"))
    write_bytes_atomic(folder / ".gitignore", GITIGNORE)
    write_json_atomic(
        folder / "seeds.json", {"seeds": seeds, "declared_at": time.time(), "preset": cfg.preset}
    )
    return folder


def keep_reference(folder: Path, against: dict) -> dict:
    """Copy the reference's results and logs into ``folder/reference/`` (a run folder's ``result.json``
    and ``train.log`` under the run's name, a log as it is), so that the comparison can be redone from
    the record alone: ``pgolf compare FOLDER/reference FOLDER``."""
    dst = folder / "reference"
    for src in map(Path, against.pop("sources", [])):
        run = src if src.is_dir() else src.parent if src.name == "result.json" else None
        files = [run / "result.json", run / "train.log"] if run else [src]
        for f in filter(Path.is_file, files):
            write_bytes_atomic(dst / run.name / f.name if run else dst / f.name, f.read_bytes())
    return {**against, "reference": f"reference/ (copied from {against['reference']})"}


def finalize_record(folder: Path, info: RecordInfo, comparison=None, hardware: str = "") -> list[Rule]:
    """Write (or refresh, e.g. after a pgolf upgrade adds a rule) ``submission.json`` and
    ``README.md`` of a folder whose seeds have run, with ``pgolf check``'s report. A refresh without
    a new comparison keeps the one the folder has, and the hardware it names (where the seeds ran);
    ``hardware`` names it for seeds run elsewhere (``spread``)."""
    try:
        seeds = json.loads((folder / "seeds.json").read_text())["seeds"]
        first = json.loads((folder / f"result_seed{seeds[0]}.json").read_text())
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise PgolfError(f"{folder}: not a record folder whose seeds have run ({e})") from None
    cfg = config_from_dict(first["config"])
    scores = [from_result(folder / f"result_seed{s}.json") for s in seeds]
    code = (folder / "train_gpt.py").stat().st_size
    old = folder / "submission.json"
    previous = json.loads(old.read_text()) if old.is_file() else {}
    against = keep_reference(folder, comparison(scores)) if comparison else previous.get("against")
    hardware = hardware or previous.get("hardware") or hardware_name()
    write_json_atomic(old, submission(cfg, info, scores, [], code, against, hardware))
    rules = check(folder)
    sub = submission(cfg, info, scores, rules, code, against, hardware)
    write_json_atomic(folder / "submission.json", sub)
    lines = against["lines"] if against else []
    write_bytes_atomic(folder / "README.md", readme(cfg, info, sub, rules, lines).encode("utf-8"))
    return rules
