#!/usr/bin/env bash
# The GPU check in one command, for a machine with one NVIDIA GPU and a fresh clone:
#
#   bash bench/gpu_check.sh                   # install into .venv-gpu, then every check on CUDA
#   bash bench/gpu_check.sh --device cpu      # the same steps on the CPU at tiny sizes (CI)
#   bash bench/gpu_check.sh --wheels .whl     # a machine without internet (bench/gpu_wheels.sh)
#
# Options: --device cuda|cpu (default cuda); --results DIR (default results/gpu-check/<time>);
# --install / --no-install (default: install on cuda, not on cpu, which uses $PYTHON or the
# active python); --wheels DIR (no network: $PYTHON or the active python, which must hold a
# CUDA PyTorch, gets the wheels in DIR, made by bench/gpu_wheels.sh, and this checkout's
# src/ on its path); --minutes M (the checks' deadline, default 8 on cuda, 15 on a busy CPU;
# the install is not counted).
# The install: a venv .venv-gpu, `pip install torch` (PyPI's Linux wheel is a CUDA build;
# $GPU_CHECK_TORCH overrides the requirement), `pip install -e ".[test]"`: pip as this
# machine configures it (index, mirror, cache, offline), nothing set here. With --wheels:
# `pip install --no-index --no-deps --target <results>/site DIR/*.whl` instead.
#
# Then, each step under its own `timeout` (cut to the deadline), failures recorded and the
# next step run: the cuda-marked tests (tests/training/test_cuda.py: CUDA against the CPU),
# the smoke protocol of groupwtacnn and groupwtacrnn on the CPU and on the device with their
# results compared, the same under a one-process torchrun, an NCCL collective,
# bench/train_step.py (fp32 and bf16) and bench/protocol_time.py at the paper's sizes for both
# methods on Rotated MNIST. --device cpu: tiny sizes, torchrun and the collective on gloo,
# train_step's --quick, protocol_time of groupwtacnn only, no CPU-against-itself comparison.
# The summary comes last: what passed, steps per second, projected hours; it is also in
# <results>/summary.txt, beside one log per step. Exit status 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."

# The experiment's command after `python` (and after torchrun's options): one place to change
# it, e.g. GPU_CHECK_RUN="-m gksparse.run mnistrotated".
RUN="${GPU_CHECK_RUN:-experiments/mnistrotated.py}"
METHODS=(groupwtacnn groupwtacrnn)
DEVICE=cuda RESULTS="" INSTALL="" MINUTES="" WHEELS=""
while (($#)); do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        --install) INSTALL=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        --minutes) MINUTES="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1; see --help." >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "error: --device is cuda or cpu, not $DEVICE." >&2; exit 2 ;; esac
if [[ -n "$WHEELS" ]]; then
    if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
        echo "error: --wheels $WHEELS holds no .whl files; fill it with bench/gpu_wheels.sh." >&2
        exit 2
    fi
    [[ "$INSTALL" == 1 ]] && { echo "error: --wheels and --install exclude each other." >&2; exit 2; }
    WHEELS="$(cd "$WHEELS" && pwd)" INSTALL=0
fi
[[ -z "$INSTALL" ]] && INSTALL=$([[ "$DEVICE" == cuda ]] && echo 1 || echo 0)
[[ -z "$MINUTES" ]] && MINUTES=$([[ "$DEVICE" == cuda ]] && echo 8 || echo 15)
RESULTS="${RESULTS:-results/gpu-check/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS" && RESULTS="$(cd "$RESULTS" && pwd)" || exit 2
DATA="${GKSPARSE_DATA:-../shared/data}"  # else the package's own default, ~/.cache/gksparse
if [[ -d "$DATA" ]]; then DATA="$(cd "$DATA" && pwd)"; else DATA="$HOME/.cache/gksparse"; fi
export GKSPARSE_DATA="$DATA"
read -ra RUN_ARGS <<< "$RUN"
: > "$RESULTS/steps.tsv"

record() {  # record NAME STATUS SECONDS NOTE: one row of steps.tsv
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RESULTS/steps.tsv"
}

why() {  # why LOG: its first `error: ` sentence, else its last exception or line (120 chars)
    { grep -m 1 '^error: ' "$1" || grep -E '^[A-Za-z_.]*(Error|Exception)\b' "$1" ||
        grep -v '^\s*$' "$1"; } | tail -n 1 | cut -c1-120
}

step() {  # step NAME LIMIT_S CMD...: CMD under timeout (cut to the deadline), log NAME.log
    local name="$1" limit="$2" left start rc status note=""
    shift 2
    left=$((DEADLINE - SECONDS))
    if ((left < 5)); then
        record "$name" "not run" 0 "out of time (--minutes $MINUTES)"
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "== $name (at most ${limit} s)"
    start=$SECONDS
    timeout -k 15 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=passed ;;
        124|137) status=timeout note="over ${limit} s" ;;
        *) status=failed note="exit $rc: $(why "$RESULTS/$name.log")" ;;
    esac
    record "$name" "$status" "$((SECONDS - start))" "$note"
    echo "   $name: $status in $((SECONDS - start)) s${note:+: $note}"
    return $((rc != 0))
}

smoke() {  # smoke DEVICE METHOD FOLDER: ARGS, the words of the smoke protocol into FOLDER
    ARGS=("${RUN_ARGS[@]}" with "$2" "${SIZE[@]}" seed=1 "device=$1" "data_dir=$DATA"
        "results_dir=$3" progress=False)
}

PY="${PYTHON:-$(command -v python || command -v python3)}"
if ((INSTALL)); then  # a venv (seeing a CUDA torch installed beside python3), torch, the package
    DEADLINE=$((SECONDS + 1800))
    read -ra TORCH <<< "${GPU_CHECK_TORCH:-torch}"
    step install 1800 bash -c 'if [[ ! -x .venv-gpu/bin/python ]]; then
            system=$(python3 -c "import torch; assert torch.version.cuda" 2> /dev/null &&
                echo --system-site-packages)
            python3 -m venv $system .venv-gpu || exit 1
        fi
        .venv-gpu/bin/python -m pip install -q "$@" || exit 1
        .venv-gpu/bin/python -m pip install -q -e ".[test]" ||
            .venv-gpu/bin/python -m pip install -q --no-build-isolation -e ".[test]"' \
        install "${TORCH[@]}"
    PY="$PWD/.venv-gpu/bin/python"
elif [[ -n "$WHEELS" ]]; then  # no network: the wheels beside the python's own packages
    DEADLINE=$((SECONDS + 300))
    step install-wheels 300 "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --target "$RESULTS/site" "$WHEELS"/*.whl
    export PYTHONPATH="$RESULTS/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
DEADLINE=$((SECONDS + MINUTES * 60))
LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1)
if [[ $DEVICE == cuda ]]; then
    SIZE=(smoke) PAPER=() TRAIN_STEP=(--no-classifier) TIMED=("${METHODS[@]}")
    LIMITS=(90 90 150 150 240)
else  # tiny sizes, one method timed: a few minutes on a 2-core CPU
    SIZE=(smoke train_size=120 test_size=20 "num_labeled=[96]" filters=16 groups=4 pictures=0)
    PAPER=("${SIZE[@]}") TRAIN_STEP=(--quick --repeats 1 --no-classifier) TIMED=("${METHODS[0]}")
    LIMITS=(240 240 240 240)
fi

step info 60 "$PY" bench/gpu_check.py info --device "$DEVICE"
if [[ $DEVICE == cuda ]]; then  # the CPU references beside the GPU's steps, 6 threads each
    for m in "${METHODS[@]}"; do
        smoke cpu "$m" "$RESULTS/runs/cpu-$m"
        step "smoke-cpu-$m" 300 env OMP_NUM_THREADS=6 "$PY" "${ARGS[@]}" &
    done
fi
step tests 120 "$PY" bench/gpu_check.py tests --device "$DEVICE"
for m in "${METHODS[@]}"; do
    smoke "$DEVICE" "$m" "$RESULTS/runs/$DEVICE-$m"
    step "smoke-$DEVICE-$m" "${LIMITS[0]}" "$PY" "${ARGS[@]}"
done
smoke "$DEVICE" "${METHODS[0]}" "$RESULTS/runs/torchrun-$DEVICE"
step "torchrun-$DEVICE-${METHODS[0]}" "${LIMITS[1]}" "${LAUNCH[@]}" "${ARGS[@]}"
step "compare-torchrun-$DEVICE" 60 "$PY" bench/gpu_check.py compare \
    "$RESULTS/runs/$DEVICE-${METHODS[0]}" "$RESULTS/runs/torchrun-$DEVICE"
wait  # the CPU references
if [[ $DEVICE == cuda ]]; then
    for m in "${METHODS[@]}"; do
        step "compare-cpu-cuda-$m" 60 "$PY" bench/gpu_check.py compare \
            "$RESULTS/runs/cpu-$m" "$RESULTS/runs/cuda-$m"
    done
fi
backend=$([[ $DEVICE == cuda ]] && echo nccl || echo gloo)
step "collective-$backend" 60 "${LAUNCH[@]}" bench/gpu_check.py collective --device "$DEVICE"
step train-step "${LIMITS[2]}" "$PY" bench/train_step.py --device "$DEVICE" "${TRAIN_STEP[@]}"
for i in "${!TIMED[@]}"; do
    m=${TIMED[$i]}
    step "protocol-time-$m" "${LIMITS[3 + i]}" "$PY" bench/protocol_time.py mnistrotated "$m" \
        "${PAPER[@]}" seed=1 probe=False "data_dir=$DATA" --device "$DEVICE"
done
echo
"$PY" -c "" 2> /dev/null || PY=python3  # the summary needs no package: a failed install too
"$PY" bench/gpu_check.py summary "$RESULTS" --device "$DEVICE"
