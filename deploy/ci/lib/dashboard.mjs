// Checks of the Grafana dashboard and the metric names used by the monitoring files.
//   exprs DASHBOARD OUT.yml : writes every PromQL expression of the dashboard (panel targets and the template
//                             variable's selector) as a recording rule into OUT.yml, for `promtool check rules`,
//                             with Grafana's variables replaced ($__rate_interval -> 1m, $instance -> .*); and
//                             checks that the panels the deployment issue asks for are there.
//   names FILE...           : prints the metric names used in the given dashboard JSON, rule and template files
//                             (one per line), for comparison with a running server's /metrics.
import fs from 'node:fs';
import YAML from 'yaml';

const [mode, ...args] = process.argv.slice(2);
const grafanaVars = (expr) => expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '1m').replace(/\$\{?instance\}?/g, '.*');

function dashboardExprs(file) {
  const dash = JSON.parse(fs.readFileSync(file, 'utf8'));
  const out = [];
  const panels = (dash.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
  for (const p of panels) for (const t of p.targets ?? []) out.push({ name: `dashboard:panel_${p.id}_${t.refId}`, expr: t.expr, title: p.title });
  for (const v of dash.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    const m = /^label_values\((.+),\s*[A-Za-z_]+\)$/.exec(q ?? '');
    if (m) out.push({ name: `dashboard:variable_${v.name}`, expr: m[1], title: `variable ${v.name}` });
  }
  return { dash, panels, exprs: out };
}

if (mode === 'exprs') {
  const [file, outFile] = args;
  const { panels, exprs } = dashboardExprs(file);
  const rules = exprs.map((e) => ({ record: e.name, expr: grafanaVars(e.expr) }));
  fs.writeFileSync(outFile, YAML.stringify({ groups: [{ name: 'dashboard', rules }] }));
  // The panels issue 7 lists, found by title and by the metric they must query.
  const required = [
    ['Request rate', 'recurformer_request_success_total'],
    ['Requests running / waiting', 'recurformer_requests_waiting'],
    ['Time to first token', 'recurformer_time_to_first_token_seconds_bucket'],
    ['Inter-token latency', 'recurformer_inter_token_latency_seconds_bucket'],
    ['Tokens/s', 'recurformer_generation_tokens_total'],
    ['End-to-end request latency', 'recurformer_e2e_request_latency_seconds_bucket'],
    ['Cache bytes by kind vs. without replacement', 'recurformer_cache_bytes_without_replacement'],
    ['Cache saved ratio', 'recurformer_cache_saved_ratio'],
    ['Preemptions', 'recurformer_preemptions_total'],
  ];
  let missing = 0;
  for (const [title, metric] of required) {
    const p = panels.find((x) => x.title === title);
    if (!p || !(p.targets ?? []).some((t) => t.expr.includes(metric))) { missing++; console.log(`  missing panel "${title}" querying ${metric}`); }
  }
  for (const p of panels.filter((x) => x.type !== 'row')) if (!(p.targets ?? []).length) { missing++; console.log(`  panel "${p.title}" has no query`); }
  console.log(`  ${exprs.length} expressions from ${panels.filter((x) => x.type !== 'row').length} panels and the variables`);
  process.exit(missing ? 1 : 0);
} else if (mode === 'names') {
  const names = new Set();
  // Metric names: identifiers that start a known family, not preceded by ":" (a recording rule's name such as
  // job:recurformer_x:rate1m is not a metric of the server) nor followed by ":".
  const re = /(?<![:\w])((?:recurformer|http_server|kestrel|dotnet|aspnetcore)_[a-z0-9_]+)(?![:\w])/g;
  const scan = (text) => { for (const m of text.matchAll(re)) names.add(m[1]); };
  for (const file of args) {
    const text = fs.readFileSync(file, 'utf8');
    if (file.endsWith('.json')) {
      const { exprs } = dashboardExprs(file);
      exprs.forEach((e) => scan(e.expr));
    } else if (/\.ya?ml$/.test(file) && !file.includes('/templates/')) {
      for (const g of YAML.parse(text).groups ?? []) for (const r of g.rules ?? []) scan(r.expr);
    } else {
      scan(text);
    }
  }
  console.log([...names].sort().join('\n'));
} else {
  console.error('usage: dashboard.mjs exprs DASHBOARD OUT.yml | names FILE...');
  process.exit(2);
}
