#!/usr/bin/env bash
# One GPU lease (packed by deploy/gpu/pack-training.sh; run from the repository root on the GPU machine):
#   OUT=dir bash .gpu/train.sh
#     convert the 25% and 50% Mamba students of the demo teacher, measure training speed on CUDA with the three runs
#     side by side, then distill them (stage 1 + stage 2) in parallel until BUDGET seconds, and leave the models
#     (xz, in parts of 15 MB) and every log in $OUT;
#   OUT=dir bash .gpu/train.sh continue NAME STEPS LR TRAIN SEED [NAME STEPS LR TRAIN SEED]
#     on the same (still warm) machine: more stage-2 steps for /tmp/NAME (a finished run), into /tmp/NAMEc.
set -uo pipefail
# The unpacked .NET runtime, and the CUDA libtorch of the machine's PyTorch for TorchSharp.
use_runtime() {
  export DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
  TORCH_LIB=${TORCH_LIB:-$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))")}
  export RECURFORMER_LIBTORCH_DIR=$TORCH_LIB LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}
if [ "${1:-}" = continue ]; then
  shift; mkdir -p $OUT/logs
  use_runtime
  more() { dotnet /tmp/app/app/recurformer.dll distill --device ${DEV:-cuda} --teacher /tmp/teacher --student /tmp/$1 --data .gpu/train.jsonl.xz \
      --out /tmp/$1c --force --stage1-steps 0 --stage2-steps $2 --batch 16 --length 512 --stage2-length 512 --lr2 $3 --train $4 --seed $5 \
      --checkpoint-every 100000 > $OUT/logs/$1c.log 2>&1; echo "$1 rc $?"
    cp /tmp/$1c/losses.json $OUT/logs/$1c-losses.json; cp /tmp/$1c/distill.json $OUT/logs/$1c-distill.json
    xz -T0 -6 -c /tmp/$1c/model.safetensors | split -b 15000000 -d - $OUT/$1c.safetensors.xz.part; }
  while [ $# -ge 5 ]; do more "$@" & shift 5; done; wait
  tar -C $OUT -czf $OUT/logs.tar.gz logs && rm -rf $OUT/logs; exit 0
fi
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-500}))
L=$OUT/logs; mkdir -p $L
exec > >(tee -a $L/train.log) 2>&1
finish() { kill ${MONITOR:-} 2>/dev/null; sleep 1; tar -C $OUT -czf $OUT/logs.tar.gz logs && rm -rf $L; }
trap finish EXIT
mkdir -p /tmp/dotnet /tmp/app /tmp/teacher
tar -xJf .gpu/rt.tar.xz -C /tmp/dotnet && tar -xJf .gpu/app.tar.xz -C /tmp/app && tar -xf .gpu/teacher.tar -C /tmp/teacher && xz -d -T0 /tmp/teacher/model.safetensors.xz || exit 1
use_runtime
nvidia-smi; nproc; free -g; python3 -c "import torch;print(torch.__version__)"
RF="dotnet /tmp/app/app/recurformer.dll"; T=/tmp/teacher; D=.gpu/train.jsonl.xz
( while true; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> $L/gpu-usage.log 2>&1; sleep 15; done ) & MONITOR=$!
pids=(); for r in 25 50; do $RF convert --model $T --analysis .gpu/recency.json --kv-reduction 0.$r --kind mamba --out /tmp/m$r > $L/convert$r.log 2>&1 & pids+=($!); done; wait "${pids[@]}"
echo "setup done at +$(( $(date +%s) - T0 )) s"
B1=${B1:-16}; L1=${L1:-512}; B2=$B1; L2=$L1; DEV=${DEV:-cuda}
# the probe: the three runs' first 5 + 5 steps side by side, so the speed measured is the speed they will share the GPU at
probe() { $RF distill --device $DEV --teacher $T --student $2 --data $D --out /tmp/probe-$1 --force --stage1-steps 5 --stage2-steps 5 \
  --batch $B1 --length $L1 --stage2-length $L2 --train $3 --checkpoint-every 1000 > $L/probe-$1.log 2>&1; }
pids=(); probe d25 /tmp/m25 mamba,o_proj & pids+=($!); probe d50a /tmp/m50 mamba,o_proj & pids+=($!); probe d50b /tmp/m50 all & pids+=($!)
wait "${pids[@]}"
for d in d25 d50a d50b; do cp /tmp/probe-$d/distill.json $L/probe-$d-distill.json || { echo "probe $d failed"; tail -40 $L/probe-$d.log; exit 1; }; done
read S1 S2 < <(python3 -c "
import json
t=[{x['stage']:x['tokens_per_second'] for x in json.load(open(f'/tmp/probe-{d}/distill.json'))['throughput']} for d in ['d25','d50a','d50b']]
print(min(x[1] for x in t),min(x[2] for x in t))")
NOW=$(date +%s); AVAIL=$((DEADLINE - NOW - 45))
read N1 N2 < <(python3 -c "a=$AVAIL*0.8;print(max(20,min(6000,int(0.35*a*$S1/($B1*$L1)))),max(20,min(6000,int(0.65*a*$S2/($B2*$L2)))))")
echo "probe at +$((NOW - T0)) s: stage1 $S1 tok/s, stage2 $S2 tok/s (slowest of three side by side); $AVAIL s left -> $N1 + $N2 steps per run"
run() { # name student train seed lr2
  $RF distill --device $DEV --teacher $T --student $2 --data $D --out /tmp/$1 --force --stage1-steps $N1 --stage2-steps $N2 --batch $B1 --length $L1 \
    --stage2-length $L2 --lr1 4e-3 --lr2 $5 --train $3 --seed $4 --checkpoint-every 100000 > $L/$1.log 2>&1
  echo "$1 exit $? at +$(( $(date +%s) - T0 )) s"; }
pids=(); run d25 /tmp/m25 mamba,o_proj 1 1e-3 & pids+=($!); run d50a /tmp/m50 mamba,o_proj 2 1e-3 & pids+=($!); run d50b /tmp/m50 all 3 3e-4 & pids+=($!)
wait "${pids[@]}"
for d in d25 d50a d50b; do cp /tmp/$d/losses.json $L/$d-losses.json; cp /tmp/$d/distill.json $L/$d-distill.json; cp /tmp/$d/config.json $L/$d-config.json; done 2>/dev/null
# the better 50% run by the stage-2 KL of its last 50 steps
BEST=$(python3 - <<'PY'
import json
def kl(d):
    try:
        r=[x for x in json.load(open(f'/tmp/{d}/losses.json')) if x.get('stage')==2]
        return sum(x['kl'] for x in r[-50:])/len(r[-50:])
    except Exception as e: return 1e9
print(min(['d50a','d50b'],key=kl))
PY
)
echo "best 50% run: $BEST"
for d in d25 $BEST; do
  [ -f /tmp/$d/model.safetensors ] || continue
  xz -T0 -6 -c /tmp/$d/model.safetensors | split -b 15000000 -d - $OUT/$d.safetensors.xz.part
done
ls -la $OUT; echo "done at +$(( $(date +%s) - T0 )) s"
