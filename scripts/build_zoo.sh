#!/usr/bin/env bash
# Rebuild zoo entries from scratch with their fixed recipes and copy them into the package.
# Usage: scripts/build_zoo.sh [NAME ...]   (default: every entry, classifiers first so that
# generator metrics are measured with the freshly trained auditor).
# ZOO_THREADS=1 when two builds share the 2 cores: oversubscribed torch threads crawl.
# ZOO_MEASURE_ONLY=1: re-grade the shipped generators NAME ... with today's classifiers (no training;
# the weights stay, the sealed record and its metrics are rewritten).
set -euo pipefail
cd "$(dirname "$0")/.."
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(unlearn-cli zoo --names)  # the registry (unlearn/pretrain/recipes.py), classifiers first
fi
dest=unlearn/zoo/weights
mkdir -p "$dest" runs/zoo
for name in "${names[@]}"; do
  echo "== $name $(date +%T)"
  extra=()
  if [ -n "${ZOO_MEASURE_ONLY:-}" ]; then
    mkdir -p "runs/measure/$name"
    cp "$dest/$name.safetensors" "runs/measure/$name/model.safetensors"
    cp "$dest/$name.json" "runs/measure/$name/model.json"
    out="runs/measure/$name"
    extra=(--measure-only)
  else
    out="runs/zoo/$name"
  fi
  unlearn-cli pretrain --recipe "$name" --out "$out" ${ZOO_THREADS:+--threads "$ZOO_THREADS"} "${extra[@]}"
  cp "$out/model.safetensors" "$dest/$name.safetensors"
  cp "$out/model.json" "$dest/$name.json"
  if [ -f "$out/samples.png" ]; then cp "$out/samples.png" "$dest/$name.png"; fi
done
