// A fake Kubernetes API server on a loopback port, just enough for `helm template --dry-run=server` to run the
// chart's lookup calls: discovery of the kinds the chart renders, and the Secrets of one namespace read from a
// JSON file. Anything else is a 404.
// Usage: node fake-kube-api.mjs PORT SECRETS.json   (SECRETS.json: {"namespace": "...", "secrets": [{"name", "data": {k: base64}, "labels"?, "annotations"?}]})
// Stops by itself after 120 s.
import http from 'node:http';
import fs from 'node:fs';

const [port, file] = process.argv.slice(2);
const fixture = JSON.parse(fs.readFileSync(file, 'utf8'));
const secret = (s) => ({ apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: s.name, namespace: fixture.namespace, labels: s.labels ?? {}, annotations: s.annotations ?? {} }, data: s.data });
const notFound = (what) => ({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: `${what} not found` });

// The kinds the chart renders, so that Helm can map every manifest to a resource.
const groups = {
  'apps/v1': [['deployments', 'Deployment']],
  'policy/v1': [['poddisruptionbudgets', 'PodDisruptionBudget']],
  'networking.k8s.io/v1': [['ingresses', 'Ingress']],
  'autoscaling/v2': [['horizontalpodautoscalers', 'HorizontalPodAutoscaler']],
  'monitoring.coreos.com/v1': [['servicemonitors', 'ServiceMonitor'], ['prometheusrules', 'PrometheusRule']],
  'keda.sh/v1alpha1': [['scaledobjects', 'ScaledObject']],
};
const core = [['secrets', 'Secret'], ['configmaps', 'ConfigMap'], ['services', 'Service'], ['serviceaccounts', 'ServiceAccount'],
  ['pods', 'Pod'], ['persistentvolumeclaims', 'PersistentVolumeClaim']];
const resourceList = (groupVersion, kinds) => ({
  kind: 'APIResourceList', apiVersion: 'v1', groupVersion,
  resources: kinds.map(([name, kind]) => ({ name, singularName: kind.toLowerCase(), namespaced: true, kind, verbs: ['get', 'list', 'create', 'update', 'patch', 'delete'] })),
});

const routes = [
  [/^\/version$/, () => [200, { major: '1', minor: '33', gitVersion: 'v1.33.0', platform: 'linux/amd64' }]],
  [/^\/api$/, () => [200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] }]],
  [/^\/apis$/, () => [200, {
    kind: 'APIGroupList', apiVersion: 'v1',
    groups: Object.keys(groups).map((gv) => {
      const [group, version] = gv.split('/');
      return { name: group, versions: [{ groupVersion: gv, version }], preferredVersion: { groupVersion: gv, version } };
    }),
  }]],
  [/^\/api\/v1$/, () => [200, resourceList('v1', core)]],
  [/^\/apis\/([^/]+)\/([^/]+)$/, (group, version) => {
    const kinds = groups[`${group}/${version}`];
    return kinds ? [200, resourceList(`${group}/${version}`, kinds)] : [404, notFound(`${group}/${version}`)];
  }],
  [/^\/api\/v1\/namespaces\/([^/]+)\/secrets$/, (ns) => [200, {
    kind: 'SecretList', apiVersion: 'v1', metadata: { resourceVersion: '1' },
    items: ns === fixture.namespace ? fixture.secrets.map(secret) : [],
  }]],
  [/^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/, (ns, name) => {
    const s = ns === fixture.namespace && fixture.secrets.find((x) => x.name === name);
    return s ? [200, secret(s)] : [404, notFound(`secrets "${name}"`)];
  }],
];

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  let answer = [404, notFound(path)];
  if (req.method === 'GET') {
    for (const [re, handler] of routes) {
      const m = re.exec(path);
      if (m) { answer = handler(...m.slice(1).map(decodeURIComponent)); break; }
    }
  }
  res.writeHead(answer[0], { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(answer[1]));
});
server.listen(Number(port), '127.0.0.1');
setTimeout(() => process.exit(0), 120_000).unref();
