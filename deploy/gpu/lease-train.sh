#!/usr/bin/env bash
# One GPU lease of distillation, packed by deploy/gpu/pack-training.sh. On the GPU machine, from the repository root:
#   OUT=dir [BUDGET=seconds] bash .gpu/train.sh [.gpu/runs.tsv]
# Every run of the table is converted from the teacher here, probed for a few steps side by side with the others (so
# the speed measured is the speed they will share the GPU at), then distilled side by side until BUDGET seconds after
# the start, each stage sized by the probe. `--stop-after-seconds` stops a run that turns out slower than probed with
# a checkpoint instead of losing it. What comes back (the lease returns at most 8 files of 16 MiB): the tensors each
# run trained (its mixers, and o_proj where trained) in one xz archive split into 15 MB parts, and every log;
# deploy/gpu/unpack-trained.sh rebuilds the models here from the same conversions.
#
# runs.tsv, tab-separated, '#' comments: NAME  BATCH  STAGE1_SHARE  CONVERT_ARGS  DISTILL_ARGS
#   STAGE1_SHARE: the share of the run's time for stage 1 (0: stage 2 only, as a window-Mamba student needs);
#   CONVERT_ARGS: `recurformer convert` options besides --model/--analysis/--out;
#   DISTILL_ARGS: `distill` options besides the data, steps, batch and lengths (learning rates, --train, --seed).
set -uo pipefail
here=$(dirname "$0")
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-500})); RUNS=${1:-$here/runs.tsv}; LENGTH=${LENGTH:-512}; DEV=${DEV:-cuda}
L=$OUT/logs; mkdir -p $L
exec > >(tee -a $L/train.log) 2>&1
finish() { kill ${MONITOR:-} 2>/dev/null; sleep 1; tar -C $OUT -czf $OUT/logs.tar.gz logs && rm -rf $L; }
trap finish EXIT

# The .NET runtime and the CLI unpacked, the CUDA libtorch of the machine's PyTorch for TorchSharp.
mkdir -p /tmp/dotnet /tmp/app /tmp/teacher
tar -xJf $here/rt.tar.xz -C /tmp/dotnet && tar -xJf $here/app.tar.xz -C /tmp/app && tar -xf $here/teacher.tar -C /tmp/teacher \
  && xz -d -f -T0 /tmp/teacher/model.safetensors.xz || exit 1
export DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
TORCH_LIB=${TORCH_LIB:-$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))")}
export RECURFORMER_LIBTORCH_DIR=$TORCH_LIB LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi 2>/dev/null | head -15; nproc; free -g | head -2
RF="dotnet /tmp/app/app/recurformer.dll"; T=/tmp/teacher; D=$here/train.jsonl.xz
( while true; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> $L/gpu-usage.log 2>&1; sleep 15; done ) & MONITOR=$!

mapfile -t TABLE < <(grep -v '^#' "$RUNS" | grep -v '^[[:space:]]*$')
field() { echo "$1" | cut -f$2; }
# Waits for the given processes only: a bare `wait` (no pids left) would also wait for the GPU monitor, forever.
wait_for() { for pid in "$@"; do wait "$pid"; done; }
[ ${#TABLE[@]} -gt 0 ] || { echo "no runs in $RUNS"; exit 1; }
pids=()
for row in "${TABLE[@]}"; do
  name=$(field "$row" 1)
  rm -rf /tmp/probe-$name /tmp/$name   # nothing of an earlier call on a still-warm machine may pass for this one's
  $RF convert --model $T --analysis $here/recency.json $(field "$row" 4) --out /tmp/init-$name --force > $L/convert-$name.log 2>&1 & pids+=($!)
done
wait_for "${pids[@]}"
echo "converted ${#TABLE[@]} students at +$(( $(date +%s) - T0 )) s"

# The probe: 3 steps of each stage a run has, all runs side by side.
pids=()
for row in "${TABLE[@]}"; do
  name=$(field "$row" 1); batch=$(field "$row" 2); share=$(field "$row" 3)
  s1=$(python3 -c "print(3 if $share > 0 else 0)"); s2=$(python3 -c "print(3 if $share < 1 else 0)")
  $RF distill --device $DEV --teacher $T --student /tmp/init-$name --data $D --out /tmp/probe-$name --force --stage1-steps $s1 \
    --stage2-steps $s2 --batch $batch --length $LENGTH --stage2-length $LENGTH $(field "$row" 5) --checkpoint-every 1000 > $L/probe-$name.log 2>&1 & pids+=($!)
done
wait_for "${pids[@]}"
NOW=$(date +%s); AVAIL=$((DEADLINE - NOW - 60))
echo "probed at +$((NOW - T0)) s; $AVAIL s left for the runs"
[ $AVAIL -ge 60 ] || { echo "too little time left for the runs (BUDGET too small, or slow probes)"; exit 1; }

pids=()
for row in "${TABLE[@]}"; do
  name=$(field "$row" 1); batch=$(field "$row" 2); share=$(field "$row" 3)
  cp /tmp/probe-$name/distill.json $L/probe-$name-distill.json || { echo "probe $name failed"; tail -30 $L/probe-$name.log; continue; }
  read N1 N2 < <(python3 - $L/probe-$name-distill.json $share $AVAIL $batch $LENGTH <<'PY'
import json, sys
path, share, avail, batch, length = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
speed = {t['stage']: t['tokens_per_second'] for t in json.load(open(path))['throughput']}
steps = lambda stage, part: int(0.9 * part * avail * speed[stage] / (batch * length)) if part > 0 else 0
print(steps(1, share), steps(2, 1 - share))
PY
)
  [ -n "$N1" ] && [ $((N1 + N2)) -gt 0 ] || { echo "$name: too slow to run a step in the time left, skipped"; continue; }
  echo "$name: $N1 + $N2 steps of $batch x $LENGTH"
  ( $RF distill --device $DEV --teacher $T --student /tmp/init-$name --data $D --out /tmp/$name --force --stage1-steps $N1 --stage2-steps $N2 \
      --batch $batch --length $LENGTH --stage2-length $LENGTH $(field "$row" 5) --checkpoint-every 100000 \
      --stop-after-seconds $((AVAIL - 10)) > $L/$name.log 2>&1
    echo "$name exit $? at +$(( $(date +%s) - T0 )) s" ) & pids+=($!)
done
wait_for "${pids[@]}"

# What each run trained, from its final model or, if it ran out of time, its last checkpoint.
rm -rf /tmp/trained; mkdir -p /tmp/trained
for row in "${TABLE[@]}"; do
  name=$(field "$row" 1)
  cp /tmp/$name/losses.json $L/$name-losses.json 2>/dev/null; cp /tmp/$name/distill.json $L/$name-distill.json 2>/dev/null
  model=/tmp/$name/model.safetensors; [ -f $model ] || model=/tmp/$name/checkpoint/model.safetensors
  [ -f $model ] && python3 $here/trained-tensors.py extract $model /tmp/trained/$name.safetensors
done
tar -C /tmp/trained -cf - . | xz -T0 -6 | split -b 15000000 -d - $OUT/trained.tar.xz.part
ls -la $OUT /tmp/trained; echo "done at +$(( $(date +%s) - T0 )) s"
