#!/bin/bash
# Runs screening runs one after another (one training process at a time).
# Usage: benchmarks/screening/queue.sh FILE  (one line per run: TAG GOAL KEY=VALUE...)
cd "$(dirname "$0")/../.."
export KERAS_BACKEND=jax OPENBLAS_NUM_THREADS=1
while read -r tag goal rest; do
  [ -z "$tag" ] && continue
  case "$tag" in \#*) continue;; esac
  sets=()
  for kv in $rest; do sets+=(--set "$kv"); done
  echo "=== $tag $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  .venv/bin/python benchmarks/screening/screen.py --tag "$tag" --goal "$goal" "${sets[@]}" --verbose 0 2>&1 | grep -E "RECORD|Error|error" | grep -v cuInit
done < "$1"
