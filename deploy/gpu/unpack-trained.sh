#!/usr/bin/env bash
# Rebuilds here the models a lease of lease-train.sh trained: for each run of the table, the same conversion of the
# teacher, with the tensors the run trained (trained.tar.xz.part*) put in.
#   bash deploy/gpu/unpack-trained.sh FILES_DIR RUNS.tsv MODELS_DIR     → MODELS_DIR/NAME, one checkpoint per run
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 FILES_DIR RUNS.tsv MODELS_DIR" >&2; exit 2; }
files=$(realpath "$1"); runs=$(realpath "$2"); models=$(realpath -m "$3")
cd "$(dirname "$0")/../.."
RF=${RF:-"dotnet src/RecurFormer.Cli/bin/Release/net10.0/recurformer.dll"}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat "$files"/trained.tar.xz.part* | xz -d | tar -x -C "$work"
mkdir -p "$models"
grep -v '^#' "$runs" | grep -v '^[[:space:]]*$' | while IFS=$'\t' read -r name batch share convert distill; do
  [ -f "$work/$name.safetensors" ] || { echo "$name: nothing trained came back"; continue; }
  $RF convert --model models/dotnet-docs-qwen2-16m --analysis docs/results/analysis/recency.json $convert --out "$models/$name" --force >/dev/null </dev/null
  python3 deploy/gpu/trained-tensors.py merge "$models/$name/model.safetensors" "$work/$name.safetensors" "$work/merged.safetensors"
  mv "$work/merged.safetensors" "$models/$name/model.safetensors"
  echo "$name: $models/$name"
done
