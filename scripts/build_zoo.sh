#!/usr/bin/env bash
# Rebuild zoo entries from scratch with their fixed recipes and copy them into the package.
# Usage: scripts/build_zoo.sh [NAME ...]   (default: every entry, classifiers first so that
# generator metrics are measured with the freshly trained auditor).
# ZOO_THREADS=1 when two builds share the 2 cores: oversubscribed torch threads crawl.
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
  unlearn-cli pretrain --recipe "$name" --out "runs/zoo/$name" ${ZOO_THREADS:+--threads "$ZOO_THREADS"}
  cp "runs/zoo/$name/model.safetensors" "$dest/$name.safetensors"
  cp "runs/zoo/$name/model.json" "$dest/$name.json"
  if [ -f "runs/zoo/$name/samples.png" ]; then cp "runs/zoo/$name/samples.png" "$dest/$name.png"; fi
done
