// Talks to a Prometheus on a loopback address through its HTTP API, with bounded waits.
//   target URL JOB SECONDS          : waits until a target of JOB is up
//   recording URL RULES.yml SECONDS : waits until every recording rule of RULES.yml has been evaluated without
//                                     error and returns at least one sample, all finite; prints them
//   alert URL NAME SECONDS          : waits until alert NAME is pending or firing; prints it
// Exit code 1 when the wait runs out.
import fs from 'node:fs';
import YAML from 'yaml';

const [mode, base, arg, seconds] = process.argv.slice(2);
const deadline = Date.now() + Number(seconds ?? 30) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function api(path) {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(5000) });
  const body = await res.json();
  if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? res.status}`);
  return body.data;
}
async function until(check, describe) {
  let last = '';
  while (Date.now() < deadline) {
    try {
      const done = await check();
      if (done) return done;
    } catch (e) { last = e.message; }
    await sleep(1000);
  }
  console.log(`  timed out: ${describe()}${last ? ` (${last})` : ''}`);
  process.exit(1);
}

if (mode === 'target') {
  let seen = [];
  await until(async () => {
    const data = await api('/api/v1/targets?state=active');
    seen = data.activeTargets.filter((t) => t.labels.job === arg);
    return seen.length > 0 && seen.every((t) => t.health === 'up');
  }, () => `targets of job ${arg}: ${JSON.stringify(seen.map((t) => [t.scrapeUrl, t.health, t.lastError]))}`);
  console.log(`  job ${arg}: ${seen.map((t) => `${t.scrapeUrl} up`).join(', ')}`);
} else if (mode === 'recording') {
  const names = YAML.parse(fs.readFileSync(arg, 'utf8')).groups.flatMap((g) => g.rules).filter((r) => r.record).map((r) => r.record);
  const pending = new Set(names);
  const values = {};
  await until(async () => {
    const groups = (await api('/api/v1/rules?type=record')).groups;
    const health = Object.fromEntries(groups.flatMap((g) => g.rules).map((r) => [r.name, r]));
    for (const name of [...pending]) {
      const rule = health[name];
      if (!rule) continue;
      if (rule.health === 'err') throw new Error(`${name}: ${rule.lastError}`);
      const result = (await api(`/api/v1/query?query=${encodeURIComponent(name)}`)).result;
      if (result.length > 0 && result.every((s) => Number.isFinite(Number(s.value[1])))) {
        values[name] = result.map((s) => `${JSON.stringify(Object.fromEntries(Object.entries(s.metric).filter(([k]) => k !== '__name__')))} ${s.value[1]}`);
        pending.delete(name);
      }
    }
    return pending.size === 0;
  }, () => `recording rules without a finite value: ${[...pending].join(', ')}`);
  for (const name of names) console.log(`  ${name} = ${values[name].join('; ')}`);
} else if (mode === 'alert') {
  let found;
  await until(async () => {
    found = (await api('/api/v1/alerts')).alerts.find((a) => a.labels.alertname === arg && (a.state === 'pending' || a.state === 'firing'));
    return found;
  }, () => `alert ${arg} never became pending or firing`);
  console.log(`  ${arg}: ${found.state} since ${found.activeAt}, value ${found.value}, labels ${JSON.stringify(found.labels)}`);
} else {
  console.error('usage: prom.mjs target|recording|alert URL ARG SECONDS');
  process.exit(2);
}
