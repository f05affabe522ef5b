#!/usr/bin/env bash
# Copies the records of the COMPLETED runs of an evidence sweep's results folder (config.json,
# run.json, result.json, cout.txt: no checkpoints or pictures) into runs/ beside this script,
# then writes the report here from them:  bash docs/results/small/collect.sh RESULTS
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
results=${1:?usage: collect.sh RESULTS, the --results folder of the sweep}
rm -rf "$here/runs"
for run in "$results"/*/[0-9]*/; do
    grep -q '"status": "COMPLETED"' "$run/run.json" 2>/dev/null || continue
    to="$here/runs/$(basename "$(dirname "$run")")/$(basename "$run")"
    mkdir -p "$to"
    cp "$run"/{config.json,run.json,result.json} "$to/"
    [ ! -f "$run/cout.txt" ] || cp "$run/cout.txt" "$to/"  # the pixels baseline has none
done
python -m gksparse.report "$here/runs" --out "$here"
