// Static checks of helm/recurformer that Helm itself does not make:
//   schema  VALUES... : each file validates against values.schema.json (the chart's values.yaml is merged under
//                       each file first, as Helm does); prints the validator's messages.
//   paths             : every .Values path used by the templates exists in values.yaml.
//   docs              : every leaf of values.yaml has a comment line above it and a row in README.md's table, and
//                       every row of that table is a value.
// Exit code 1 on any finding.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import Ajv from 'ajv';

const chart = path.resolve(process.argv[2]);
const mode = process.argv[3];
const args = process.argv.slice(4);
const valuesText = fs.readFileSync(path.join(chart, 'values.yaml'), 'utf8');
const values = YAML.parse(valuesText);
const isMap = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
let findings = 0;
const finding = (message) => { findings++; console.log(`  ${message}`); };

function merge(base, over) {
  if (!isMap(base) || !isMap(over)) return over;
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base ? merge(base[k], v) : v;
  return out;
}

function leaves(node, prefix = '') {
  if (!isMap(node) || Object.keys(node).length === 0) return [prefix];
  return Object.entries(node).flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k));
}

if (mode === 'schema') {
  const ajv = new Ajv({ allErrors: true, strict: false });
  const validate = ajv.compile(JSON.parse(fs.readFileSync(path.join(chart, 'values.schema.json'), 'utf8')));
  for (const file of args) {
    const data = file === path.join(chart, 'values.yaml') ? values : merge(values, YAML.parse(fs.readFileSync(file, 'utf8')) ?? {});
    if (validate(data)) {
      console.log(`  ${file}: valid`);
    } else {
      finding(`${file}: rejected`);
      for (const e of validate.errors) console.log(`    ${e.instancePath || '/'} ${e.message}${e.params?.allowedValues ? ` (${e.params.allowedValues.join(', ')})` : ''}`);
    }
  }
} else if (mode === 'paths') {
  const dir = path.join(chart, 'templates');
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => /\.(ya?ml|tpl|txt)$/.test(f));
  let used = 0;
  for (const f of files) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    for (const m of text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      used++;
      const parts = m[1].slice(1).split('.');
      let node = values;
      for (const [i, p] of parts.entries()) {
        if (!isMap(node) || !(p in node)) {
          finding(`templates/${f}: .Values.${parts.join('.')} is not in values.yaml (no "${parts.slice(0, i + 1).join('.')}")`);
          break;
        }
        node = node[p];
      }
    }
  }
  console.log(`  ${used} .Values references in ${files.length} template files`);
} else if (mode === 'docs') {
  const all = leaves(values);
  // Comments: a leaf's key must have a comment line before it (yaml keeps it as commentBefore of the key or,
  // for the first key of a nested map, of the map).
  const doc = YAML.parseDocument(valuesText);
  const walk = (map, prefix, inherited) => {
    map.items.forEach((pair, i) => {
      const key = `${prefix}${pair.key.value}`;
      const comment = pair.key.commentBefore ?? (i === 0 ? inherited : undefined);
      if (YAML.isMap(pair.value) && pair.value.items.length > 0) {
        walk(pair.value, `${key}.`, pair.value.commentBefore);
      } else if (!comment || !comment.trim()) {
        finding(`values.yaml: ${key} has no comment line above it`);
      }
    });
  };
  walk(doc.contents, '', doc.contents.commentBefore ?? doc.commentBefore);
  const readme = fs.readFileSync(path.join(chart, 'README.md'), 'utf8');
  const rows = new Set([...readme.matchAll(/^\|\s*`([^`]+)`\s*\|/gm)].map((m) => m[1]));
  for (const leaf of all) if (!rows.has(leaf)) finding(`README.md: no row for ${leaf}`);
  const known = new Set(all);
  for (const row of rows) if (!known.has(row)) finding(`README.md: row ${row} is not a value`);
  console.log(`  ${all.length} values, ${rows.size} README rows`);
} else {
  console.error('usage: chart-check.mjs CHART schema VALUES... | paths | docs');
  process.exit(2);
}
process.exit(findings ? 1 : 0);
