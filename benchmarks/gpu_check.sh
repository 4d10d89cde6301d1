#!/usr/bin/env bash
# The GPU acceptance check (issue 30, section 3): one prepared script for a short loan of one GPU.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT, else gpu_check_out)
#
# Needs torch with CUDA and `pip install -e ".[test]"` done. It runs, each step's output in OUT_DIR
# and on the console, and carries on past a failing step (the exit status counts the failures):
#   1. nvidia-smi and the versions torch sees;
#   2. tests/test_gpu.py (the CUDA twins of the CPU tests: kernels, calibration, a short run);
#   3. pgolf preflight for baseline, pr162 and frontier on the demo corpus (the GPU machine cannot
#      reach the FineWeb export), their evaluations projected onto the contest's validation stream
#      and 8 ranks (--val-tokens, --ranks), as JSON; the baseline's step time set beside its record (43.5 ms on 8xH100,
#      so ~8x on one GPU at the same global batch).
# Budget: ~1 min for the tests, ~1 min per small preset, up to 8 min for frontier's compile.
set -u
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
failed=0
step() {  # step NAME COMMAND...: run, tee to OUT/NAME.txt, count a failure
    local name=$1
    shift
    echo "== $name: $*"
    "$@" > >(tee "$out/$name.txt") 2>&1 || { echo "== $name FAILED"; failed=$((failed + 1)); }
}
step env bash -c 'nvidia-smi; python -c "import torch; print(torch.__version__, torch.version.cuda, \
torch.cuda.get_device_name(), torch.cuda.nccl.version())"; python -c "import flash_attn_interface" \
&& echo "flash_attn_interface: importable" || echo "flash_attn_interface: not installed"'
step test_gpu python -m pytest -q -p no:cacheprovider tests/test_gpu.py
data=${PGOLF_GPU_DATA:-data}
step data python -c "from pgolf.tools.data.stdlib_corpus import build_demo_dataset as b
for v in (1024, 8192): b('$data', vocab_size=v)"
demo() {  # demo PRESET VOCAB VAL_TOKENS: preflight on the demo corpus at that vocabulary
    step "preflight_$1" python -m pgolf preflight "$1" --out "$out/run_$1" --val-tokens "$3" --ranks 8 \
        --data.root "$data" --data.dataset "datasets/pgolf_demo_sp$2" \
        --data.tokenizer "tokenizers/pgolf_demo_$2_bpe.model"
}
demo baseline 1024 62021632
demo pr162 1024 62021632
demo frontier 8192 47851520
python - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("baseline", "pr162", "frontier"):
    try:
        pf = json.loads((out / f"run_{name}" / "preflight.json").read_text())
    except (OSError, ValueError):
        print(f"{name}: no preflight JSON")
        continue
    steps = ", ".join(f"seq {p['seq_len']} x{p['loop_passes']}: {p['step_ms']:.1f} ms" for p in pf["phases"])
    print(f"{name}: ok={pf['ok']} {steps}; eval projected {pf['evaluation']['projected_seconds']:.0f} s")
    if name == "baseline":
        ms = pf["phases"][0]["step_ms"]
        print(f"  baseline step on one GPU {ms:.1f} ms vs the record's 43.5 ms x 8 = 348 ms ({ms / 348:.2f}x)")
EOF
echo "gpu_check: $failed failed step(s); outputs in $out"
exit "$failed"
