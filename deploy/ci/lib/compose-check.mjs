// deploy/compose.yaml without docker compose: every build context, Dockerfile and bind-mounted file it names
// exists, ports are published on 127.0.0.1 only, Grafana's dashboard provider reads the folder the dashboard
// is mounted in, and Prometheus gets the config and rules that deploy/ci/check.sh checks.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

const file = process.argv[2];
const dir = path.dirname(file);
const compose = YAML.parse(fs.readFileSync(file, 'utf8'));
let findings = 0;
const finding = (m) => { findings++; console.log(`  ${m}`); };
const mounts = {};
for (const [name, svc] of Object.entries(compose.services)) {
  if (svc.build) {
    const context = path.resolve(dir, svc.build.context);
    if (!fs.existsSync(path.join(context, svc.build.dockerfile))) finding(`${name}: no ${svc.build.dockerfile} in ${context}`);
  }
  for (const v of svc.volumes ?? []) {
    const [src, dst] = v.split(':');
    if (src.startsWith('.') || src.startsWith('/')) {
      if (!fs.existsSync(path.resolve(dir, src))) finding(`${name}: mounts ${src}, which does not exist`);
    } else if (!(src in (compose.volumes ?? {}))) {
      finding(`${name}: named volume ${src} is not declared`);
    }
    mounts[`${name}:${dst}`] = src;
  }
  for (const p of svc.ports ?? []) if (!String(p).startsWith('127.0.0.1:')) finding(`${name}: port ${p} is not bound to 127.0.0.1`);
  for (const d of svc.depends_on ?? []) if (!(d in compose.services)) finding(`${name}: depends on unknown ${d}`);
}
const provider = YAML.parse(fs.readFileSync(path.join(dir, 'grafana/provisioning/dashboards/recurformer.yml'), 'utf8')).providers[0].options.path;
if (!Object.keys(mounts).some((k) => k.startsWith(`grafana:${provider}/`) && k.endsWith('.json'))) finding(`grafana: no dashboard JSON mounted under ${provider}`);
if (mounts['prometheus:/etc/prometheus/prometheus.yml'] !== './prometheus/prometheus.yml') finding('prometheus: not given ./prometheus/prometheus.yml');
if (mounts['prometheus:/etc/prometheus/rules'] !== './prometheus/rules') finding('prometheus: not given ./prometheus/rules next to its config');
const targets = YAML.parse(fs.readFileSync(path.join(dir, 'prometheus/prometheus.yml'), 'utf8')).scrape_configs[0].static_configs[0].targets;
if (!targets.includes('recurformer:8000')) finding(`prometheus.yml does not scrape the compose service recurformer:8000 (${targets})`);
console.log(`  ${Object.keys(compose.services).length} services, ${Object.keys(mounts).length} mounts checked`);
process.exit(findings ? 1 : 0);
