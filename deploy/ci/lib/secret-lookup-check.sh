#!/usr/bin/env bash
# The chart's API-key Secret handling against a cluster, with a fake Kubernetes API on a loopback port
# (lib/fake-kube-api.mjs) and `helm template --dry-run=server`, which runs the templates' lookup calls as
# `helm install` would:
#   - apiKey.existingSecret naming a Secret that does not exist fails with a message naming it;
#   - an existing Secret without the key apiKey.secretKey fails with a message listing its keys;
#   - an existing Secret with the key renders;
#   - the chart's own Secret keeps the key it already holds on upgrade.
# Usage: secret-lookup-check.sh HELM CHART WORKDIR
set -euo pipefail
helm=$1 chart=$2 work=$3
dir=$(dirname "$0")
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat > "$work/secrets.json" <<'JSON'
{"namespace": "llm", "secrets": [
  {"name": "llm-api-keys", "data": {"key": "c2VjcmV0"}},
  {"name": "rf-recurformer-api-key", "data": {"api-key": "a2VwdC1rZXk="},
   "labels": {"app.kubernetes.io/managed-by": "Helm"},
   "annotations": {"meta.helm.sh/release-name": "rf", "meta.helm.sh/release-namespace": "llm"}}]}
JSON
cat > "$work/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:$port"}}]
contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: llm}}]
current-context: fake
users: [{name: fake, user: {token: fake}}]
YAML
chmod 600 "$work/kubeconfig"
node "$dir/fake-kube-api.mjs" "$port" "$work/secrets.json" &
api=$!
trap 'kill $api 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$port/version" 2>/dev/null && break; sleep 0.1; done

render() { "$helm" template rf "$chart" -n llm --dry-run=server --disable-openapi-validation --kubeconfig "$work/kubeconfig" "$@" 2>&1; }
fail=0
expect() { # expect DESCRIPTION PATTERN SHOULD_SUCCEED ARGS...
  local what=$1 pattern=$2 ok=$3; shift 3
  local out rc=0
  out=$(render "$@") || rc=$?
  if { [ "$ok" = yes ] && [ $rc -ne 0 ]; } || { [ "$ok" = no ] && [ $rc -eq 0 ]; } || ! grep -qE -- "$pattern" <<< "$out"; then
    echo "FAIL $what (exit $rc)"; grep -E 'Error|error' <<< "$out" | head -n 3; fail=1
  else
    echo "ok   $what: $(grep -m1 -oE -- "$pattern" <<< "$out" | cut -c1-300)"
  fi
}
expect "a wrong existing Secret name fails the install" \
  'apiKey.existingSecret: there is no Secret "llm-keys-typo" in namespace "llm"; create it \(kubectl -n llm create secret generic llm-keys-typo --from-literal=key=YOUR-KEY\)' no \
  --set apiKey.existingSecret=llm-keys-typo --set apiKey.secretKey=key
expect "an existing Secret without the key fails the install" \
  'Secret "llm-api-keys" in namespace "llm" has no key "api-key" \(apiKey.secretKey\); its keys: key' no \
  --set apiKey.existingSecret=llm-api-keys
expect "an existing Secret with the key renders" 'name: llm-api-keys' yes \
  --set apiKey.existingSecret=llm-api-keys --set apiKey.secretKey=key
expect "an upgrade keeps the key of the chart's own Secret" 'api-key: "a2VwdC1rZXk="' yes
exit $fail
