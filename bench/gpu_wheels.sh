#!/usr/bin/env bash
# The wheels for `bench/gpu_check.sh --wheels DIR` on a GPU machine without internet: run this
# where pip reaches an index, carry DIR (and the MNIST files, GKSPARSE_DATA) to that machine.
#
#   bash bench/gpu_wheels.sh [--dir DIR] [--python X.Y] [REQUIREMENT ...]
#
# --dir: where the wheels go (default .whl). --python: the GPU machine's Python (default 3.12).
# REQUIREMENTS (default: what the package needs beyond what a CUDA PyTorch image usually
# holds, i.e. torch, numpy, scipy, scikit-learn, matplotlib, Pillow, tqdm and pytest: sacred and
# its dependencies, and setuptools < 81, whose pkg_resources sacred imports): fetched as
# binary wheels for Linux x86_64, each without its own dependencies (--no-deps: name them all;
# `pip show NAME` there lists what is already installed).
set -euo pipefail
DIR=.whl PYTHON_VERSION=3.12 REQUIREMENTS=()
while (($#)); do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        --python) PYTHON_VERSION="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1; see --help." >&2; exit 2 ;;
        *) REQUIREMENTS+=("$1"); shift ;;
    esac
done
if ((${#REQUIREMENTS[@]} == 0)); then
    REQUIREMENTS=(sacred docopt-ng GitPython gitdb smmap jsonpickle munch colorama packaging
        py-cpuinfo wrapt "setuptools<81")
fi
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp "${PLATFORMS[@]}" -d "$DIR" "${REQUIREMENTS[@]}"
echo "$(find "$DIR" -name '*.whl' | wc -l) wheels in $DIR ($(du -sh "$DIR" | cut -f1)); then, on the GPU machine:"
echo "  bash bench/gpu_check.sh --wheels $DIR"
