#!/usr/bin/env bash
# Training throughput of `recurformer distill`, builds side by side in one run (issue 11's "stage 1 ≥ 10×, stage 2 ≥ 20×
# at the same batch and length"): each build converts its own 50% Mamba student of the demo teacher (STUDENT=mamba; or
# STUDENT=window-mamba: the default model's conversion, 1 sink + 27 recent tokens beside a mixer without a convolution),
# then runs STAGE1_STEPS steps of 4 × 256 tokens (stage 1; 0: none) and STAGE2_STEPS of 4 × STAGE2_LENGTH (128) (stage 2)
# at each --threads, the builds in
# turn within each repetition, each run in a raised-priority scheduler group (where the session may raise it). tokens/s is counted after the first SKIP
# steps of each stage (JIT tiering and oneDNN's kernel generation: a fast build's first ~11 steps take mostly 140–260 ms against
# 110–150 after, docs/conversion.md, fifteenth round), from each run's losses.json (older builds have no throughput
# field). The × columns divide medians; "paired" is the median of each repetition's ratio to the baseline's run of the
# same repetition: it follows a slow stretch of the host that slows every build of a repetition, and is inflated by one
# that slows only the baseline. CACHE_BUILDS also run with stage 2 reading the teacher cache (--teacher-cache; written by one
# unmeasured run of whole cache shards first). Prints a table (median and range over repetitions) and writes OUT/distill-throughput.json.
#   bash deploy/benchmarks/distill-throughput.sh OUT NAME=CHECKOUT [NAME=CHECKOUT ...]
# A CHECKOUT is a source tree (e.g. `git worktree add /tmp/before c2cebb2`); it is built in Release. The first is the
# baseline of the × column. Env: THREADS ("1 2"), REPS (3), STAGE1_STEPS (45), STAGE2_STEPS (45), SKIP (15),
# STAGE2_SKIP (SKIP; stage 2's own: .NET's tiered PGO takes a method called once a step 60 steps or more to its
# optimised code, and a fast build's stage 2 ran ~10% faster over its steps 90-150 than over 15-45 by the medians of
# four runs, docs/conversion.md, eighteenth round), CACHE_BUILDS (names, space-separated; default none).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 OUT NAME=CHECKOUT [NAME=CHECKOUT ...]" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd); shift
threads_list=${THREADS:-1 2}; reps=${REPS:-3}; s1=${STAGE1_STEPS:-45}; s2=${STAGE2_STEPS:-45}; skip=${SKIP:-15}; skip2=${STAGE2_SKIP:-$skip}
length2=${STAGE2_LENGTH:-128}; student_kind=${STUDENT:-mamba}
[ "$skip" -ge 1 ] && [ "$skip2" -ge 1 ] && { [ "$s1" = 0 ] || [ "$s1" -gt "$skip" ]; } && [ "$s2" -gt "$skip2" ] && [ "$length2" -ge 2 ] \
  || { echo "error: need 1 ≤ SKIP < STAGE1_STEPS (or STAGE1_STEPS=0), 1 ≤ STAGE2_SKIP < STAGE2_STEPS and STAGE2_LENGTH ≥ 2" >&2; exit 2; }
case $student_kind in
  mamba) student_flags=(--kind mamba) ;;
  window-mamba) student_flags=(--kind window-mamba --window 27 --sinks 1 --rank-window 64 --expand 1 --d-state 2 --d-conv 1) ;;
  *) echo "error: STUDENT is mamba or window-mamba, not '$student_kind'" >&2; exit 2 ;;
esac
cache_builds=" ${CACHE_BUILDS:-} "
teacher=$repo/models/dotnet-docs-qwen2-16m; data=$repo/../shared/data/dotnet-docs/train.jsonl.xz
[ -f "$data" ] || { echo "error: no training data (../shared/data/dotnet-docs/train.jsonl.xz)" >&2; exit 1; }
raised() { setsid --wait bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null; exec "$@"' _ "$@"; }

names=(); dlls=()
for spec in "$@"; do
  name=${spec%%=*}; tree=$(cd "${spec#*=}" && pwd)
  [[ $name =~ ^[A-Za-z0-9._-]+$ && $spec == *=* ]] || { echo "error: '$spec' is not NAME=CHECKOUT" >&2; exit 2; }
  [[ " ${names[*]} " != *" $name "* ]] || { echo "error: build name '$name' given twice" >&2; exit 2; }
  dotnet build "$tree/src/RecurFormer.Cli" -c Release -v q -nologo > "$out/build-$name.log" 2>&1 \
    || { echo "error: building $tree failed, see $out/build-$name.log" >&2; exit 1; }
  names+=("$name"); dlls+=("$tree/src/RecurFormer.Cli/bin/Release/net10.0/recurformer.dll")
  rm -rf "${out:?}/$name"; mkdir -p "$out/$name"
  dotnet "${dlls[-1]}" convert --model "$teacher" --analysis "$repo/docs/results/analysis/recency.json" --kv-reduction 0.5 \
    "${student_flags[@]}" --out "$out/$name/student" >/dev/null
done

# tokens/s of one stage of a run: steps after the first SKIP (STAGE2_SKIP) of that stage, from the losses' wall-clock seconds.
rate() { jq --argjson stage "$1" --argjson tokens "$2" --argjson skip "$([ "$1" = 2 ] && echo "$skip2" || echo "$skip")" \
  '[.[] | select(.stage == $stage)] | .[$skip - 1:] | if length < 2 then null else (length - 1) * $tokens / (.[-1].seconds - .[0].seconds) end' "$3"; }

distill() { # NAME DLL THREADS RUN_DIR STAGE1 STAGE2 [extra]
  local name=$1 dll=$2 threads=$3 dir=$4 stage1=$5 stage2=$6; shift 6
  raised dotnet "$dll" distill --teacher "$teacher" --student "$out/$name/student" --data "$data" --out "$dir" --force \
    --stage1-steps "$stage1" --stage2-steps "$stage2" --batch 4 --length 256 --stage2-length "$length2" --checkpoint-every 100000 \
    --threads "$threads" "$@" > "$dir.log" 2>&1 || { echo "error: $name --threads $threads failed, see $dir.log" >&2; exit 1; }
}

for i in "${!names[@]}"; do
  name=${names[$i]}
  [[ $cache_builds == *" $name "* ]] || continue
  # the cache writes a shard once all its 256 sequences are known: fill whole shards, as far as the measured runs read
  distill "$name" "${dlls[$i]}" 2 "$out/$name/cache-fill" 0 $(( ((s1 + s2) * 4 + 255) / 256 * 64 )) --teacher-cache "$out/$name/teacher-cache"
done

runs=$out/runs.jsonl; : > "$runs"
for rep in $(seq 1 "$reps"); do
  for threads in $threads_list; do
    for i in "${!names[@]}"; do
      name=${names[$i]}; dir=$out/$name/t$threads-r$rep
      distill "$name" "${dlls[$i]}" "$threads" "$dir" "$s1" "$s2"
      jq -nc --arg build "$name" --argjson threads "$threads" --argjson rep "$rep" --argjson s1 "$(rate 1 1024 "$dir/losses.json")" \
        --argjson s2 "$(rate 2 $((4 * length2)) "$dir/losses.json")" '{build: $build, threads: $threads, rep: $rep, cache: false, stage1: $s1, stage2: $s2}' >> "$runs"
      if [[ $cache_builds == *" $name "* ]]; then
        # stage 1 first as in the other runs (its steps warm the process up; stage 2 then reads the sequences after them)
        distill "$name" "${dlls[$i]}" "$threads" "$dir-cache" "$s1" "$s2" --teacher-cache "$out/$name/teacher-cache"
        jq -nc --arg build "$name" --argjson threads "$threads" --argjson rep "$rep" --argjson s2 "$(rate 2 $((4 * length2)) "$dir-cache/losses.json")" \
          '{build: $build, threads: $threads, rep: $rep, cache: true, stage1: null, stage2: $s2}' >> "$runs"
      fi
    done
  done
done

jq -s --arg base "${names[0]}" --arg student "$student_kind" --argjson length2 "$length2" --argjson skip "$skip" --argjson skip2 "$skip2" --argjson s1 "$s1" --argjson s2 "$s2" --argjson order "$(printf '%s\n' "${names[@]}" | jq -R . | jq -s .)" '
  def median: [.[] | select(. != null)] | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  def summary: [.[] | select(. != null)] | {median: median, min: min, max: max};
  def ratio($value; $base): if $value != null and $base != null and $base > 0 then $value / $base else null end;
  . as $all
  | [group_by([.build, .threads, .cache])[] | {build: .[0].build, threads: .[0].threads, teacher_cache: .[0].cache,
      stage1: ([.[].stage1] | summary), stage2: ([.[].stage2] | summary), reps: .}]
  | map(. as $row | ($all | map(select(.build == $base and .threads == $row.threads and .cache == false))) as $b
      | def paired($stage): [$row.reps[] | . as $r | ratio($r[$stage]; $b[] | select(.rep == $r.rep) | .[$stage])] | median;
      . + {stage1_x: ratio($row.stage1.median; [$b[].stage1] | median), stage2_x: ratio($row.stage2.median; [$b[].stage2] | median),
        stage1_x_paired: paired("stage1"), stage2_x_paired: paired("stage2")} | del(.reps))
  | sort_by(.build as $b | [($order | index($b)), .threads, .teacher_cache])
  | {student: $student, batch: 4, stage1_length: 256, stage2_length: $length2, stage1_steps: $s1, stage2_steps: $s2, skipped_steps: $skip,
      stage2_skipped_steps: $skip2, baseline: $base, rows: ., runs: $all}' "$runs" > "$out/distill-throughput.json"

jq -r 'def x: if . then (. * 10 | round / 10) else "–" end;
  "| build | --threads | teacher cache | stage 1 tokens/s (median, range) | × | × paired | stage 2 tokens/s (median, range) | × | × paired |",
  "|---|---:|---|---|---:|---:|---|---:|---:|",
  (.rows[] | "| \(.build) | \(.threads) | \(if .teacher_cache then "read" else "–" end) | "
    + (if .stage1.median then "\(.stage1.median | floor) (\(.stage1.min | floor)–\(.stage1.max | floor))" else "–" end)
    + " | \(.stage1_x | x) | \(.stage1_x_paired | x) | "
    + (if .stage2.median then "\(.stage2.median | floor) (\(.stage2.min | floor)–\(.stage2.max | floor))" else "–" end)
    + " | \(.stage2_x | x) | \(.stage2_x_paired | x) |")' \
  "$out/distill-throughput.json"
