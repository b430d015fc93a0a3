// Reads a Dockerfile of docker/ so that deploy/ci/check.sh can do what the image build and the container do,
// without a container engine.
//   plan DOCKERFILE ROOT : prints bash assignments: BUILD_RUN (the build stage's RUN commands), RUNTIME_COPY
//                          (pairs "from-build|context" SRC DST of the final stage's COPY), IMAGE_ENV (KEY=VALUE),
//                          IMAGE_WORKDIR, IMAGE_USER, ENTRYPOINT, HEALTHCHECK (exec form), IMAGE_PORT. Absolute
//                          paths of the image (/app, /out, /tmp, /models) are moved under ROOT.
//   projects DOCKERFILE CSPROJ : checks that the build stage copies every project file that CSPROJ references,
//                          directly or not, before its restore (else the restore layer fails in a real build).
import fs from 'node:fs';
import path from 'node:path';

const [mode, file, arg] = process.argv.slice(2);

// Instructions with their continuation lines joined; comments dropped.
function instructions(text) {
  const out = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!current && (line === '' || line.startsWith('#'))) continue;
    if (current && line.startsWith('#')) continue;
    current += (current ? ' ' : '') + line.replace(/\\$/, '').trim();
    if (!line.endsWith('\\')) { out.push(current); current = ''; }
  }
  return out.map((i) => { const m = /^(\w+)\s+(.*)$/.exec(i); return { op: m[1].toUpperCase(), args: m[2] }; });
}

function stages(text) {
  const list = [];
  for (const ins of instructions(text)) {
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?/i.exec(ins.args);
      list.push({ image: m[1], name: m[2], ins: [] });
    } else if (list.length) {
      list.at(-1).ins.push(ins);
    }
  }
  return list;
}

const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
const text = fs.readFileSync(file, 'utf8');
const all = stages(text);
const build = all.find((s) => s.name === 'build');
const final = all.at(-1);

if (mode === 'plan') {
  const root = arg;
  const mapPath = (p) => (/^\/(app|out|tmp|models)(\/|$)/.test(p) ? root + p : p);
  const mapCommand = (cmd) => cmd.replace(/(^|[\s="'])\/(app|out|tmp|models)(?=[\s/"']|$)/g, (m, pre, dir) => `${pre}${root}/${dir}`);
  const run = build.ins.filter((i) => i.op === 'RUN').map((i) => mapCommand(i.args));
  const copies = [];
  const env = [];
  let workdir = '/';
  let user = 'root';
  let entrypoint = [];
  let healthcheck = [];
  let port = '';
  for (const i of final.ins) {
    if (i.op === 'COPY') {
      const parts = i.args.split(/\s+/);
      const from = parts.find((p) => p.startsWith('--from='))?.slice(7);
      const [src, dst] = parts.filter((p) => !p.startsWith('--'));
      if (from && from !== 'build') continue; // other stages (CUDA libtorch, ASP.NET runtime) are not emulated
      copies.push(from ? 'from-build' : 'context', from ? mapPath(src) : src, mapPath(dst));
    } else if (i.op === 'ENV') {
      for (const m of i.args.matchAll(/(\w+)=("[^"]*"|\S*)/g)) env.push(`${m[1]}=${mapPath(m[2].replace(/^"|"$/g, ''))}`);
    } else if (i.op === 'WORKDIR') {
      workdir = mapPath(i.args);
    } else if (i.op === 'USER') {
      user = i.args;
    } else if (i.op === 'ENTRYPOINT') {
      entrypoint = JSON.parse(i.args).map(mapPath);
    } else if (i.op === 'HEALTHCHECK') {
      healthcheck = JSON.parse(i.args.slice(i.args.indexOf('CMD') + 3).trim());
    } else if (i.op === 'EXPOSE') {
      port = i.args.split('/')[0];
    }
  }
  console.log(`BUILD_RUN=(${run.map(q).join(' ')})`);
  console.log(`RUNTIME_COPY=(${copies.map(q).join(' ')})`);
  console.log(`IMAGE_ENV=(${env.map(q).join(' ')})`);
  console.log(`IMAGE_WORKDIR=${q(workdir)}`);
  console.log(`IMAGE_USER=${q(user)}`);
  console.log(`ENTRYPOINT=(${entrypoint.map(q).join(' ')})`);
  console.log(`HEALTHCHECK=(${healthcheck.map(q).join(' ')})`);
  console.log(`IMAGE_PORT=${q(port)}`);
} else if (mode === 'projects') {
  const closure = new Set();
  const visit = (proj) => {
    const rel = path.relative('.', proj);
    if (closure.has(rel)) return;
    closure.add(rel);
    const xml = fs.readFileSync(proj, 'utf8');
    for (const m of xml.matchAll(/<ProjectReference\s+Include="([^"]+)"/g)) visit(path.resolve(path.dirname(proj), m[1].replace(/\\/g, '/')));
  };
  visit(path.resolve(arg));
  const restore = build.ins.findIndex((i) => i.op === 'RUN' && /dotnet restore/.test(i.args));
  const copied = build.ins.slice(0, restore).filter((i) => i.op === 'COPY').flatMap((i) => i.args.split(/\s+/).slice(0, -1));
  const missing = [...closure, 'Directory.Build.props', 'Directory.Packages.props'].filter((p) => !copied.includes(p));
  console.log(`  ${file}: restore layer copies ${closure.size} projects + build props${missing.length ? `; missing: ${missing.join(', ')}` : ''}`);
  process.exit(restore < 0 || missing.length ? 1 : 0);
}
