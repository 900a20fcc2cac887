#!/usr/bin/env node
// Checks that the package is complete, without building anything or reaching outside pkg/: run by
// `npm pack` / `npm publish` (prepack), so that a copy of pkg/ packs anywhere once dist/ is built,
// and at the end of scripts/build.mjs. It checks
//   - the modules: dist/index.js, dist/widget.js and every module they import (relative imports,
//     followed) or start as a worker (new Worker(new URL('./x.js', import.meta.url)): the engine's
//     worker, dist/api/engine-worker.js), each with its .d.ts, and every .d.ts's relative imports;
//   - the wasm module: both builds (dist/wasm/genprm*.js + *_bg.wasm + .d.ts), not the stand-in
//     the build writes when pkg/wasm is missing;
//   - the assets: the Pyodide runtime, the sympy + mpmath bundle, the tiny demo model, each
//     named by a literal new URL() in dist/runtime/asset-urls.js (so that bundlers copy it);
//   - the files every copy of the package carries: README.md, the two licence texts and the
//     third-party notices.
// On failure it names each missing file and the commands that build it, and exits 1.
//
//   node scripts/check-dist.mjs [--allow-missing-wasm] [--quiet]
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, posix } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(pkg, 'dist');

/** Files a site gets in every copy of the package, besides dist/ (committed in pkg/; the last is
 *  the package's one command, genprm-assets). */
export const PACKAGE_FILES = ['README.md', 'LICENSE-MIT', 'LICENSE-APACHE', 'THIRD_PARTY_NOTICES.md', 'scripts/genprm-assets.mjs'];
export const WASM_FILES = [
  'genprm.js', 'genprm.d.ts', 'genprm_bg.wasm',
  'genprm_relaxed.js', 'genprm_relaxed.d.ts', 'genprm_relaxed_bg.wasm',
];
export const ASSET_FILES = [
  'pyodide/pyodide.mjs.txt', 'pyodide/pyodide.asm.mjs.txt', 'pyodide/pyodide.asm.wasm', 'pyodide/python_stdlib.zip', 'pyodide/pyodide-lock.json',
  'python/genprm-python.zip',
  'models/tiny-genprm/config.json', 'models/tiny-genprm/generation_config.json', 'models/tiny-genprm/model.safetensors',
  'models/tiny-genprm/tokenizer.json', 'models/tiny-genprm/tokenizer_config.json', 'models/tiny-genprm/chat_template.jinja',
];
/** The first line of the stand-in scripts/build.mjs writes when pkg/wasm is missing. */
export const WASM_STANDIN = 'the genprm wasm module was not built';

/** What is missing from the package (an empty list when it is complete) and how much was checked. */
export function checkDist({ allowMissingWasm = false } = {}) {
  const problems = [];
  const missing = (file, why = '') => problems.push(`${relative(pkg, file)}${why ? ` (${why})` : ''}`);
  const nonEmpty = (file) => existsSync(file) && statSync(file).isFile() && statSync(file).size > 0;

  // The modules: follow the relative imports from the entry points.
  const RELATIVE = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\bnew\s+Worker\(\s*new\s+URL\(\s*)(['"])(\.\.?\/[^'"]+)\1/g;
  const seen = new Set();
  function follow(file) {
    if (seen.has(file)) return;
    seen.add(file);
    if (!nonEmpty(file)) { missing(file); return; }
    const text = readFileSync(file, 'utf8');
    if (file.endsWith('.js') && !file.includes(`${join('dist', 'wasm')}`)) {
      const dts = file.replace(/\.js$/, '.d.ts');
      if (!nonEmpty(dts) && !seen.has(dts)) { seen.add(dts); missing(dts, `the types of ${relative(pkg, file)}`); }
      else follow(dts);
    }
    for (const m of text.matchAll(RELATIVE)) {
      let target = posix.normalize(posix.join(posix.dirname(relative(dist, file).split('\\').join('/')), m[2]));
      if (file.endsWith('.d.ts') && target.endsWith('.js')) target = target.replace(/\.js$/, '.d.ts');
      // Asset URLs (new URL('./x', import.meta.url)) are checked below; only modules are followed.
      if (!/\.(m?js|d\.ts)$/.test(target)) continue;
      follow(join(dist, ...target.split('/')));
    }
  }
  for (const entry of ['index.js', 'widget.js']) follow(join(dist, entry));
  // The engine's worker, started by dist/api/engine.js (followed above when its new Worker(...) is
  // intact; named here so that a build that lost it fails).
  if (!seen.has(join(dist, 'api', 'engine-worker.js'))) missing(join(dist, 'api', 'engine-worker.js'), 'the engine\'s worker, started by dist/api/engine.js');

  // package.json's exports point at files that exist.
  const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8'));
  const targets = (v) => (typeof v === 'string' ? [v] : Object.values(v ?? {}).flatMap(targets));
  for (const t of targets(manifest.exports)) {
    if (t.startsWith('./dist/wasm/') && allowMissingWasm) continue;
    if (!nonEmpty(join(pkg, t))) missing(join(pkg, t), 'named in package.json "exports"');
  }

  // The wasm module.
  let wasmMissing = false;
  for (const f of WASM_FILES) {
    const file = join(dist, 'wasm', f);
    if (!nonEmpty(file)) { wasmMissing = true; if (!allowMissingWasm) missing(file); continue; }
    if (f.endsWith('.js') && readFileSync(file, 'utf8').includes(WASM_STANDIN)) {
      wasmMissing = true;
      if (!allowMissingWasm) missing(file, 'a stand-in: dist/ was built without pkg/wasm');
    }
  }

  for (const f of ASSET_FILES) if (!nonEmpty(join(dist, 'assets', ...f.split('/')))) missing(join(dist, 'assets', ...f.split('/')));
  // Each asset's literal new URL() in the generated dist/runtime/asset-urls.js (what bundlers
  // copy): tsc's output of the source's stand-in has none.
  const urls = join(dist, 'runtime', 'asset-urls.js');
  const listed = nonEmpty(urls) ? readFileSync(urls, 'utf8') : '';
  const unlisted = [...ASSET_FILES.map((f) => `assets/${f}`), ...(wasmMissing ? [] : ['wasm/genprm_bg.wasm', 'wasm/genprm_relaxed_bg.wasm'])]
    .filter((f) => !listed.includes(`new URL('../${f}', import.meta.url)`));
  if (unlisted.length) missing(urls, `generated by scripts/build.mjs with a new URL() for each packaged file; without: ${unlisted.join(', ')}`);
  for (const f of PACKAGE_FILES) if (!nonEmpty(join(pkg, f))) missing(join(pkg, f));
  return { problems, modules: seen.size, wasmMissing };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { problems, modules, wasmMissing } = checkDist({ allowMissingWasm: process.argv.includes('--allow-missing-wasm') });
  if (problems.length) {
    console.error(`genprm: the package is incomplete; missing:\n  ${problems.join('\n  ')}\n`
      + 'Build it in a checkout of the genprm repository, then pack (a copy of pkg/ with a complete dist/ packs anywhere):\n'
      + '  scripts/build-wasm            # pkg/wasm: the wasm module (dist/wasm/)\n'
      + '  npm ci --prefix web           # the build toolchain (TypeScript, Pyodide)\n'
      + '  npm run build --prefix pkg    # pkg/dist: the modules and their .d.ts, wasm/, assets/\n'
      + '(README.md, LICENSE-MIT, LICENSE-APACHE, THIRD_PARTY_NOTICES.md and scripts/genprm-assets.mjs are committed in pkg/.)');
    process.exit(1);
  }
  // On stderr: `npm pack --json` prints what prepack writes to stdout before its JSON.
  if (!process.argv.includes('--quiet')) console.error(`genprm: dist/ is complete (${modules} module files${wasmMissing ? ', no wasm module' : ', the wasm module'}, ${ASSET_FILES.length} assets)`);
}
