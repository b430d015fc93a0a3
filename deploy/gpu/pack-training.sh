#!/usr/bin/env bash
# Packs what one GPU lease needs to distill students of the demo teacher (lease-train.sh) into .gpu/ (git-ignored),
# within the 64 MiB that travels to the lent machine: the CLI published framework-dependent without the CPU libtorch
# (the machine brings PyTorch's CUDA libtorch), the .NET runtime without ASP.NET Core (distill never touches it), the
# teacher's weights xz-compressed, the training text, the recency analysis and the table of runs. ~59 MB.
#   bash deploy/gpu/pack-training.sh [RUNS.tsv]     (default deploy/gpu/runs/window-mamba.tsv), then on the GPU
#   machine, from the repository root: OUT=/some/folder BUDGET=seconds bash .gpu/train.sh
# Nothing else of the working tree is needed there (see docs/conversion.md, "Training on a GPU").
set -euo pipefail
runs=$(realpath "${1:-$(dirname "$0")/runs/window-mamba.tsv}")
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/dotnet-docs/train.jsonl.xz}
[ -f "$data" ] || { echo "error: $data not found (set DATA=path/to/train.jsonl.xz)" >&2; exit 1; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p .gpu
dotnet publish src/RecurFormer.Cli -c Release -r linux-x64 --self-contained false -o "$work/app" -p:DebugType=none >/dev/null
find "$work/app" -maxdepth 1 \( -name 'libtorch*.so*' -o -name 'libc10*.so*' -o -name 'libgomp*.so*' -o -name 'libshm*.so*' \
     -o -name 'libbackend_with_compiler.so' -o -name 'libjitbackend_test.so' -o -name 'libnnapi_backend.so' \
     -o -name 'libaoti_custom_ops.so' -o -name 'libtorchbind_test.so' \) -delete
rm -rf "$work/app/runtimes"
# Only the base framework travels: drop ASP.NET Core from the runtime configuration (the server is not started there).
python3 - "$work/app/recurformer.runtimeconfig.json" <<'PY'
import json, sys
path = sys.argv[1]; config = json.load(open(path))
config["runtimeOptions"]["frameworks"] = [f for f in config["runtimeOptions"]["frameworks"] if f["name"] == "Microsoft.NETCore.App"]
json.dump(config, open(path, "w"), indent=2)
PY
tar -C "$work" -cf - app | xz -T0 -9 > .gpu/app.tar.xz
dn=$(dirname "$(readlink -f "$(command -v dotnet)")")
tar -C "$dn" -cf - dotnet host shared/Microsoft.NETCore.App | xz -T0 -9 > .gpu/rt.tar.xz
teacher=models/dotnet-docs-qwen2-16m
mkdir -p "$work/teacher"
cp $teacher/{config.json,generation_config.json,merges.txt,tokenizer.json,tokenizer_config.json,vocab.json} "$work/teacher/"
xz -T0 -6 -c $teacher/model.safetensors > "$work/teacher/model.safetensors.xz"
tar -C "$work/teacher" -cf .gpu/teacher.tar .
cp "$data" .gpu/train.jsonl.xz
cp docs/results/analysis/recency.json .gpu/recency.json
cp deploy/gpu/lease-train.sh .gpu/train.sh
cp deploy/gpu/trained-tensors.py .gpu/
cp "$runs" .gpu/runs.tsv
du -sh .gpu | sed 's/^/packed: /'
