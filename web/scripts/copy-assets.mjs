#!/usr/bin/env node
// Puts what the app serves as static files into web/public/generated/ (gitignored), which Vite
// serves in development and copies into dist/ on build:
//   pyodide/   the Pyodide runtime from the npm package (no CDN at run time)
//   python/    the sympy + mpmath bytecode bundle (scripts/build-python-bundle.mjs)
//   models/tiny-genprm/  the tiny demo model, copied from tests/fixtures (not duplicated in git)
import { copyFile, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildPythonBundle } from './build-python-bundle.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const web = join(here, '..');
const repo = join(web, '..');
const out = join(web, 'public', 'generated');

const PYODIDE_FILES = ['pyodide.mjs', 'pyodide.asm.mjs', 'pyodide.asm.wasm', 'python_stdlib.zip', 'pyodide-lock.json'];
// Served with .txt appended to the JavaScript modules' names (pkg/src/runtime/assets.ts,
// packagedPyodideName: dev servers would compile them; the frame needs their bytes only).
const served = (f) => (f.endsWith('.mjs') ? `${f}.txt` : f);
const MODELS = ['tiny-genprm'];

async function copyIfChanged(from, to) {
  const [a, b] = await Promise.all([stat(from), stat(to).catch(() => null)]);
  if (b && b.size === a.size && b.mtimeMs >= a.mtimeMs) return;
  await copyFile(from, to);
}

export async function copyAssets() {
  const bundle = await buildPythonBundle();
  const pyodideDir = dirname(require.resolve('pyodide/package.json'));
  await rm(join(out, 'pyodide'), { recursive: true, force: true });
  await mkdir(join(out, 'pyodide'), { recursive: true });
  for (const f of PYODIDE_FILES) await copyFile(join(pyodideDir, f), join(out, 'pyodide', served(f)));
  await mkdir(join(out, 'python'), { recursive: true });
  await copyIfChanged(bundle, join(out, 'python', 'genprm-python.zip'));
  for (const m of MODELS) {
    const src = join(repo, 'tests', 'fixtures', 'models', m);
    const dst = join(out, 'models', m);
    await rm(dst, { recursive: true, force: true });
    await mkdir(dst, { recursive: true });
    for (const f of await readdir(src)) {
      if (f === 'README.md' || f.startsWith('expected')) continue;
      await copyFile(join(src, f), join(dst, f));
    }
  }
  // The package asks the demo folder for these names only (DEMO_MODEL_FILES, so that a load
  // probes no absent file): the folder must hold exactly them.
  const listed = /DEMO_MODEL_FILES[^=]*=\s*\[([^\]]*)\]/.exec(await readFile(join(repo, 'pkg', 'src', 'runtime', 'assets.ts'), 'utf8'));
  const want = [...(listed?.[1] ?? '').matchAll(/'([^']+)'/g)].map((m) => m[1]).sort();
  const have = (await readdir(join(out, 'models', 'tiny-genprm'))).sort();
  if (JSON.stringify(want) !== JSON.stringify(have)) {
    throw new Error(`the demo model's files (${have.join(', ')}) are not DEMO_MODEL_FILES in pkg/src/runtime/assets.ts (${want.join(', ')})`);
  }
  console.log(`assets ready in ${out}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  copyAssets().catch((e) => { console.error(`copy-assets: ${e.stack || e}`); process.exit(1); });
}
