#!/usr/bin/env node
// Builds the npm package into pkg/dist/ (gitignored):
//   *.js + *.d.ts   pkg/src compiled by tsc, laid out as src/ is: the entries index.js and
//                   widget.js at the top, the rest in api/, contract/, present/, python/ and
//                   runtime/ (ES modules, one file per module, no bundler needed: a page can load
//                   dist/index.js with one <script type="module">)
//   wasm/           the wasm-bindgen module from pkg/wasm/ (scripts/build-wasm)
//   assets/         the Pyodide runtime, the sympy + mpmath bytecode bundle and the tiny demo
//                   model (web/scripts/copy-assets.mjs makes them), found at run time next to the
//                   modules with new URL(..., import.meta.url)
// The toolchain (TypeScript, Pyodide for the bundle) is web/'s: run `npm ci --prefix web` first.
// The web app's build runs this (web/package.json's "pkg" script), so the project's build and test
// command (scripts/test) build pkg/dist too. It ends with scripts/check-dist.mjs, which is also
// all `npm pack` runs (prepack): a copy of pkg/ with a complete dist/ packs anywhere.
//
//   node pkg/scripts/build.mjs [--require-wasm]     (npm run build --prefix pkg)
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const web = join(pkg, '..', 'web');
const dist = join(pkg, 'dist');
const requireWasm = process.argv.includes('--require-wasm');

function fail(message) {
  console.error(`pkg build: ${message}`);
  process.exit(1);
}

const tsc = join(web, 'node_modules', 'typescript', 'bin', 'tsc');
if (!existsSync(tsc)) fail('web/node_modules is missing: run `npm ci --prefix web` first (the package builds with its toolchain)');

await rm(dist, { recursive: true, force: true });
try {
  execFileSync(process.execPath, [tsc, '-p', join(pkg, 'tsconfig.build.json')], { stdio: 'inherit' });
} catch {
  fail('tsc failed');
}

// Module specifiers a browser can load without a bundler: the wasm module's bare name (the web
// app's Vite plugin resolves it there) and the workers' source names (the engine's worker is
// started with new Worker(new URL('./engine-worker.js', import.meta.url), { type: 'module' }),
// literally, which bundlers recognise and browsers load as it is).
const rewrites = [
  [/(['"])genprm-wasm\1/g, "'../wasm/genprm.js'", 'runtime/wasm.js'],
  [/(['"])genprm-wasm-relaxed\1/g, "'../wasm/genprm_relaxed.js'", 'runtime/wasm.js'],
  [/\.\/pyodide-worker\.ts(['"])/g, './pyodide-worker.js$1', 'python/pyodide-executor.js'],
  [/\.\/engine-worker\.ts(['"])/g, './engine-worker.js$1', 'api/engine.js'],
];
for (const [re, to, file] of rewrites) {
  const path = join(dist, ...file.split('/'));
  const text = await readFile(path, 'utf8');
  const out = text.replace(re, to);
  if (out === text) fail(`${file}: expected to rewrite ${re}`);
  await writeFile(path, out);
}
// tsc rewrites .ts specifiers in the JavaScript it emits but not in declarations.
const emitted = (await readdir(dist, { recursive: true })).map((f) => f.split('\\').join('/'));
for (const f of emitted) {
  if (!f.endsWith('.d.ts')) continue;
  const text = await readFile(join(dist, f), 'utf8');
  await writeFile(join(dist, f), text.replace(/((?:from|import)\s*\(?\s*['"]\.\.?\/[^'"]+)\.ts(['"])/g, '$1.js$2'));
}
for (const f of emitted) {
  if (!f.endsWith('.js') && !f.endsWith('.d.ts')) continue;
  const text = await readFile(join(dist, f), 'utf8');
  if (/from ['"][^'"]+\.ts['"]/.test(text) || /import\(['"][^'"]+\.ts['"]\)/.test(text)) fail(`${f} still imports a .ts file`);
}

const wasmDir = join(pkg, 'wasm');
if (existsSync(join(wasmDir, 'genprm.js'))) {
  await mkdir(join(dist, 'wasm'), { recursive: true });
  for (const f of ['genprm.js', 'genprm_bg.wasm', 'genprm.d.ts', 'genprm_bg.wasm.d.ts', 'genprm_relaxed.js', 'genprm_relaxed_bg.wasm', 'genprm_relaxed.d.ts', 'genprm_relaxed_bg.wasm.d.ts']) {
    if (existsSync(join(wasmDir, f))) await cp(join(wasmDir, f), join(dist, 'wasm', f));
  }
} else if (requireWasm) {
  fail('pkg/wasm/genprm.js is missing: run scripts/build-wasm first');
} else {
  console.warn('pkg build: pkg/wasm/genprm.js is missing (run scripts/build-wasm): the package will say the model cannot load');
  await mkdir(join(dist, 'wasm'), { recursive: true });
  for (const f of ['genprm.js', 'genprm_relaxed.js']) {
    await writeFile(join(dist, 'wasm', f), 'throw new Error("the genprm wasm module was not built (pkg/wasm/genprm.js is missing; run scripts/build-wasm)");\n');
  }
}

const { copyAssets } = await import(pathToFileURL(join(web, 'scripts', 'copy-assets.mjs')).href);
await copyAssets();
const generated = join(web, 'public', 'generated');
for (const d of ['pyodide', 'python', 'models']) await cp(join(generated, d), join(dist, 'assets', d), { recursive: true });

// dist/runtime/asset-urls.js: each packaged file's URL as a literal new URL('../<path>',
// import.meta.url), the form bundlers copy into a site's build (pkg/src/runtime/asset-urls.ts
// says why; its declaration file, from tsc, stays as it is).
const packaged = [
  ...(await readdir(join(dist, 'assets'), { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => relative(dist, join(e.parentPath ?? e.path, e.name)).split('\\').join('/')),
  ...['genprm_bg.wasm', 'genprm_relaxed_bg.wasm'].filter((f) => existsSync(join(dist, 'wasm', f))).map((f) => `wasm/${f}`),
].sort();
for (const f of packaged) if (!/^[\w./-]+$/.test(f)) fail(`${f}: a packaged file's name must be plain (letters, digits, . _ - /)`);
await writeFile(join(dist, 'runtime', 'asset-urls.js'), [
  '// Generated by pkg/scripts/build.mjs: each file the package ships beside its modules, by its path',
  '// under dist/, written as a literal new URL() so that bundlers copy it (see src/runtime/asset-urls.ts).',
  '/** Each packaged file\'s URL by its path under dist/. */',
  'export const PACKAGED_FILES = Object.freeze({',
  ...packaged.map((f) => `  ${JSON.stringify(f)}: new URL(${JSON.stringify(`../${f}`).replace(/"/g, "'")}, import.meta.url),`),
  '});',
  '',
].join('\n'));
try {
  execFileSync(process.execPath, [join(pkg, 'scripts', 'check-dist.mjs'), '--quiet', ...(requireWasm ? [] : ['--allow-missing-wasm'])], { stdio: 'inherit' });
} catch {
  fail('dist/ is incomplete (above)');
}
console.log(`pkg build: ${dist}`);
