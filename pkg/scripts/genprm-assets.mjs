#!/usr/bin/env node
// genprm-assets DIR: copies the package's run-time assets (dist/assets/: the Pyodide runtime, the
// sympy + mpmath bundle, the tiny demo model) and THIRD_PARTY_NOTICES.md into DIR, for a site
// that serves them from a place of its choosing (a CDN, a bundler the package's new URL()s do not
// reach, such as Rollup without its assets plugin): e.g. `genprm-assets public/genprm` in the
// build script, and `configure({ assetsURL: '/genprm/' })` in the page. Files already there with the same size and an mtime no older are left alone.
import { copyFile, mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(pkg, 'dist', 'assets');
const to = process.argv[2];
if (!to || to.startsWith('-')) {
  console.error('usage: genprm-assets DIR   (copies genprm/dist/assets/ into DIR; then configure({ assetsURL }) with where DIR is served)');
  process.exit(2);
}

let copied = 0, kept = 0;
async function copyIfChanged(a, b) {
  const [sa, sb] = await Promise.all([stat(a), stat(b).catch(() => null)]);
  if (sb && sb.size === sa.size && sb.mtimeMs >= sa.mtimeMs) { kept++; return; }
  await mkdir(dirname(b), { recursive: true });
  await copyFile(a, b);
  copied++;
}
async function copyTree(a, b) {
  for (const e of await readdir(a, { withFileTypes: true })) {
    if (e.isDirectory()) await copyTree(join(a, e.name), join(b, e.name));
    else if (e.isFile()) await copyIfChanged(join(a, e.name), join(b, e.name));
  }
}

try {
  await copyTree(from, resolve(to));
  await copyIfChanged(join(pkg, 'THIRD_PARTY_NOTICES.md'), join(resolve(to), 'THIRD_PARTY_NOTICES.md'));
} catch (e) {
  console.error(`genprm-assets: ${e.message}`);
  process.exit(1);
}
console.log(`genprm-assets: ${resolve(to)} (${copied} copied, ${kept} unchanged)`);
