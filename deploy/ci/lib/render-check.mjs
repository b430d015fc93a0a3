// Assertions on the manifests `helm template` rendered for values.yaml and each helm/recurformer/ci/*-values.yaml
// (files render-<name>.yaml in the folder given), so that a template change that breaks what issue 7 asks for
// (probes, security, grace period, model volume, API key, GPU, monitoring, autoscaling) fails CI.
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import YAML from 'yaml';

const dir = process.argv[2];
const rules = YAML.parse(fs.readFileSync('deploy/prometheus/rules/recurformer.rules.yml', 'utf8'));
const load = (name) => {
  const objects = YAML.parseAllDocuments(fs.readFileSync(path.join(dir, `render-${name}.yaml`), 'utf8')).map((d) => d.toJS()).filter(Boolean);
  const get = (kind) => objects.filter((o) => o.kind === kind);
  const one = (kind) => { const l = get(kind); assert.equal(l.length, 1, `${name}: one ${kind}`); return l[0]; };
  const deployment = one('Deployment');
  const pod = deployment.spec.template.spec;
  const server = pod.containers.find((c) => c.name === 'server');
  const config = one('ConfigMap').data;
  return { objects, get, one, deployment, pod, server, config };
};
let count = 0;
const test = (name, fn) => { fn(); count++; console.log(`  ok ${name}`); };

test('default: probes, security, grace period, baked-in model, generated API key', () => {
  const { pod, server, config, get, one, deployment } = load('default');
  assert.equal(server.startupProbe.httpGet.path, '/health/ready');
  assert.ok(server.startupProbe.periodSeconds * server.startupProbe.failureThreshold >= 300, 'start-up probe allows 5 minutes of loading');
  assert.equal(server.livenessProbe.httpGet.path, '/health/live');
  assert.equal(server.readinessProbe.httpGet.path, '/health/ready');
  assert.equal(server.ports[0].containerPort, 8000);
  assert.equal(config.RECURFORMER__Port, '8000');
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(server.securityContext.readOnlyRootFilesystem, true);
  assert.equal(server.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(server.securityContext.capabilities.drop, ['ALL']);
  assert.ok(server.volumeMounts.some((m) => m.mountPath === '/tmp'), '/tmp is a volume');
  assert.equal(config.RECURFORMER__DrainGracePeriod, '00:00:30');
  assert.equal(pod.terminationGracePeriodSeconds, 5 + 30 + 15);
  assert.equal(config.RECURFORMER__Model__Path, undefined, 'the image model needs no path');
  const key = server.env.find((e) => e.name === 'RECURFORMER__ApiKeys__0');
  const secret = one('Secret');
  assert.equal(key.valueFrom.secretKeyRef.name, secret.metadata.name);
  assert.ok(Buffer.from(secret.data[key.valueFrom.secretKeyRef.key], 'base64').toString().length >= 32, 'generated key');
  assert.equal(deployment.spec.replicas, 1);
  assert.equal(pod.automountServiceAccountToken, false);
  assert.equal(one('Service').spec.ports[0].targetPort, 'http');
  assert.equal(one('PodDisruptionBudget').spec.maxUnavailable, 1);
  assert.equal(one('ServiceAccount').metadata.name, pod.serviceAccountName);
  assert.equal(get('Ingress').length + get('ServiceMonitor').length + get('ScaledObject').length + get('HorizontalPodAutoscaler').length, 0);
  assert.equal(deployment.spec.template.metadata.annotations['prometheus.io/scrape'], 'true');
});
test('pvc: created claim mounted read-only, model path, given key, drain 90 s', () => {
  const { pod, server, config, one } = load('pvc-values');
  assert.equal(config.RECURFORMER__Model__Path, '/models/my-model');
  assert.equal(config.RECURFORMER__Model__ServedModelName, 'my-model');
  assert.equal(config.RECURFORMER__DrainGracePeriod, '00:01:30');
  assert.equal(pod.terminationGracePeriodSeconds, 5 + 90 + 15);
  const claim = one('PersistentVolumeClaim');
  assert.equal(pod.volumes.find((v) => v.name === 'model').persistentVolumeClaim.claimName, claim.metadata.name);
  assert.equal(claim.spec.resources.requests.storage, '20Gi');
  assert.equal(server.volumeMounts.find((m) => m.name === 'model').readOnly, true);
  assert.equal(Buffer.from(one('Secret').data['api-key'], 'base64').toString(), 'ci-key');
});
test('hostPath: node folder, no API key, NodePort, no PDB', () => {
  const { pod, server, config, get, one } = load('hostpath-values');
  assert.equal(pod.volumes.find((v) => v.name === 'model').hostPath.path, '/data/models/dotnet-docs-recurformer-16m');
  assert.equal(config.RECURFORMER__Model__Path, '/models');
  assert.equal(get('Secret').length, 0);
  assert.ok(!server.env.some((e) => e.name === 'RECURFORMER__ApiKeys__0'));
  assert.equal(one('Service').spec.type, 'NodePort');
  assert.equal(get('PodDisruptionBudget').length + get('ServiceAccount').length, 0);
  assert.equal(pod.serviceAccountName, 'default');
});
test('initImage: init container copies the model into an emptyDir; existing Secret', () => {
  const { pod, server, config, get } = load('initimage-values');
  const init = pod.initContainers.find((c) => c.name === 'copy-model');
  assert.equal(init.image, 'registry.example.com/models/dotnet-docs-recurformer-16m:1');
  assert.deepEqual(init.command, ['cp', '-R', '/model/.', '/models/']);
  assert.equal(init.securityContext.readOnlyRootFilesystem, true);
  assert.ok(pod.volumes.find((v) => v.name === 'model').emptyDir);
  assert.equal(config.RECURFORMER__Model__Path, '/models/dotnet-docs-recurformer-16m');
  assert.equal(get('Secret').length, 0, 'no Secret of the chart');
  assert.deepEqual(server.env.find((e) => e.name === 'RECURFORMER__ApiKeys__0').valueFrom.secretKeyRef, { name: 'llm-api-keys', key: 'key' });
});
test('monitoring: Ingress, ServiceMonitor job label, PrometheusRule = deploy rules, KEDA on queue depth', () => {
  const { deployment, one, get } = load('monitoring-values');
  const ingress = one('Ingress');
  assert.equal(ingress.spec.rules[0].host, 'llm.example.com');
  assert.equal(ingress.spec.tls[0].secretName, 'llm-tls');
  const monitor = one('ServiceMonitor');
  const service = one('Service');
  assert.equal(service.metadata.labels[monitor.spec.jobLabel], 'recurformer', 'job="recurformer"');
  assert.equal(monitor.spec.endpoints[0].path, '/metrics');
  assert.equal(monitor.metadata.labels.release, 'kube-prometheus-stack');
  assert.deepEqual(one('PrometheusRule').spec.groups, rules.groups);
  const scaled = one('ScaledObject');
  assert.equal(scaled.spec.scaleTargetRef.name, deployment.metadata.name);
  assert.match(scaled.spec.triggers[0].metadata.query, /^sum\(recurformer_requests_waiting\{job="recurformer",namespace="llm",pod=~"rf-recurformer-\.\*"\}\)$/);
  assert.equal(scaled.spec.triggers[0].metadata.threshold, '8');
  assert.equal(deployment.spec.replicas, undefined, 'KEDA owns the replica count');
  assert.equal(get('HorizontalPodAutoscaler').length, 0);
});
test('gpu: nvidia.com/gpu, CUDA device, HPA on CPU, scheduling constraints', () => {
  const { deployment, pod, server, config, one } = load('gpu-values');
  assert.equal(server.resources.limits['nvidia.com/gpu'], 1);
  assert.equal(server.resources.limits.cpu, '8');
  assert.equal(server.image, 'registry.example.com/recurformer:0.1.0-cuda');
  assert.equal(config.RECURFORMER__Model__Device, 'cuda');
  assert.equal(config.RECURFORMER__Model__Threads, '4');
  assert.equal(config.RECURFORMER__Engine__MaxModelLen, '32768');
  assert.equal(pod.tolerations[0].key, 'nvidia.com/gpu');
  assert.equal(pod.nodeSelector['nvidia.com/gpu.present'], 'true');
  const hpa = one('HorizontalPodAutoscaler');
  assert.equal(hpa.spec.metrics[0].resource.name, 'cpu');
  assert.equal(hpa.spec.maxReplicas, 3);
  assert.equal(deployment.spec.replicas, undefined, 'the HPA owns the replica count');
});
console.log(`  ${count} configurations checked`);
