#!/usr/bin/env bash
# The lent-GPU script (docs/GPU.md, 'The lent-GPU script'): every check that needs a CUDA device,
# in one command of at most 10 minutes on one GPU, with every result under one output folder.
#
#   bash tools/gpu_suite.sh                    # on the GPU machine (`make gpu-suite`)
#   bash tools/gpu_suite.sh --device cpu       # dry mode: the same steps at toy sizes on the CPU
#   bash tools/gpu_suite.sh --output DIR --world-clip world_clip.pt --steps pytest,syncs
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   env      nvidia-smi and torch's view of the device                      -> env.txt
#   pytest   the CUDA-only tests (pytest -m cuda)                           -> pytest.txt
#   cluster  make check-gpus's check, AMP bf16/fp16 pseudo masks included    -> cluster_check/
#   syncs    torch.cuda.set_sync_debug_mode("warn") over a training step     -> syncs.json
#   bench    tools/benchmark.py --device cuda                                -> benchmark.json/.md
#   tf32     TF32 vs float32 teacher features and pseudo masks               -> tf32.json
# Then summary.md / summary.json (tools/gpu_suite_summary.py). Output: --output DIR, else
# $OUT/gpu_suite when $OUT is set (the lent machine's return folder), else
# output/gpu_suite/<UTC time>. Exit status: 0 when every step passed, 1 otherwise.
set -u -o pipefail

DEVICE=cuda
OUTPUT=""
WORLD_CLIP=""
STEPS="env,pytest,cluster,syncs,bench,tf32"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --output) OUTPUT="$2"; shift 2 ;;
    --world-clip) WORLD_CLIP="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "tools/gpu_suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "tools/gpu_suite.sh: --device must be cuda or cpu" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
PYTHON="${GPU_SUITE_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if [ -z "$OUTPUT" ]; then
  if [ -n "${OUT:-}" ]; then OUTPUT="$OUT/gpu_suite"; else
    OUTPUT="output/gpu_suite/$(date -u +%Y%m%d-%H%M%S)"; fi
fi
if [ -e "$OUTPUT/summary.json" ]; then
  echo "tools/gpu_suite.sh: $OUTPUT already holds a summary.json; give a new --output" >&2; exit 2
fi
mkdir -p "$OUTPUT"
OUTPUT="$(cd "$OUTPUT" && pwd)"
STEPS_FILE="$OUTPUT/steps.tsv"
: > "$STEPS_FILE"

# The synthetic world's CLIP for the cluster check and the TF32 comparison: --world-clip FILE
# (tools/train_world_clip.py prints its path), else random weights of its shape (the reports say
# which). Sync counts and speed do not depend on the weights: random CLIPs there.
WORLD=(--allow-random-clip)
if [ -n "$WORLD_CLIP" ]; then WORLD=(--clip-weights "$WORLD_CLIP"); fi
RANDOM_CLIP=(--allow-random-clip)
if [ "$DEVICE" = cuda ]; then
  # name:time limit (s); they add up to 585 s, under the 10 minutes of a lent GPU.
  LIMITS=(env:30 pytest:120 cluster:165 syncs:75 bench:150 tf32:45)
  PYTEST_TARGETS=(tests)
  CLUSTER_ARGS=(--device cuda --num-processes 1 --iterations 10 --amp-iterations 3)
  SYNCS_ARGS=(--device cuda)
  BENCH_ARGS=(--device cuda --sections inference train pseudo --precisions fp32 bf16 fp16)
  TF32_ARGS=(--device cuda --images 16)
else  # dry mode: the same commands at toy sizes
  LIMITS=(env:60 pytest:120 cluster:240 syncs:180 bench:240 tf32:180)
  PYTEST_TARGETS=(tests/d2/test_d2_gpu_cuda.py)
  TINY=("INPUT.CROP.SIZE" "(64, 64)" "MODEL.CLIP.TEXT_TEMPLATES" "single")
  CLUSTER_ARGS=(--device cpu --num-processes 1 --checks amp_pseudo_masks --amp-iterations 1)
  CLUSTER_ARGS+=(--datasets-root "$OUTPUT/datasets" "${TINY[@]}")
  SYNCS_ARGS=(--device cpu --size 64 --steps 1
              --config-file configs/synthetic/chimeraseg_mitb0_synthetic.yaml "${TINY[@]}")
  BENCH_ARGS=(--device cpu --tiny --sections train pseudo)
  TF32_ARGS=(--device cpu --images 2)
fi

limit_of() { for pair in "${LIMITS[@]}"; do [ "${pair%%:*}" = "$1" ] && echo "${pair#*:}"; done; }

# run_step NAME LOG COMMAND...: runs COMMAND under NAME's time limit, output to LOG.
run_step() {
  local name="$1" log="$2"; shift 2
  case ",$STEPS," in *",$name,"*) ;; *) return 0 ;; esac
  local start rc
  start=$(date +%s)
  echo "[gpu_suite] $name: $*" | tee "$OUTPUT/$log"
  timeout --kill-after=10 "$(limit_of "$name")" "$@" >> "$OUTPUT/$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$log" >> "$STEPS_FILE"
  echo "[gpu_suite] $name: exit $rc after $(( $(date +%s) - start )) s (log $OUTPUT/$log)"
}

run_step env env.txt bash -c "nvidia-smi || true; $PYTHON -c 'import torch; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", \
torch.cuda.is_available()); [print(torch.cuda.get_device_name(i)) \
for i in range(torch.cuda.device_count())]'"
run_step pytest pytest.txt "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider \
  --junitxml="$OUTPUT/pytest.xml" "${PYTEST_TARGETS[@]}"
run_step cluster cluster_check.txt "$PYTHON" tools/check_cluster.py "${WORLD[@]}" \
  --output "$OUTPUT/cluster_check" "${CLUSTER_ARGS[@]}"
run_step syncs syncs.txt "$PYTHON" tools/count_syncs.py "${RANDOM_CLIP[@]}" \
  --output-json "$OUTPUT/syncs.json" "${SYNCS_ARGS[@]}"
run_step bench benchmark.txt "$PYTHON" tools/benchmark.py "${RANDOM_CLIP[@]}" \
  --output-json "$OUTPUT/benchmark.json" --output-markdown "$OUTPUT/benchmark.md" \
  "${BENCH_ARGS[@]}"
run_step tf32 tf32.txt "$PYTHON" tools/tf32_pseudo_masks.py "${WORLD[@]}" \
  --output-json "$OUTPUT/tf32.json" "${TF32_ARGS[@]}"

"$PYTHON" tools/gpu_suite_summary.py "$OUTPUT" --device "$DEVICE"
