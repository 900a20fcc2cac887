#!/usr/bin/env node
// Copies the built npm package (pkg/package.json, README.md and dist/, from `npm run build
// --prefix ../pkg`) into public/vendor/genprm/ (gitignored), where the embedding example loads it
// the way a tutoring site would: one <script type="module" src=".../genprm/dist/index.js">.
import { cp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = join(web, '..', 'pkg');
const out = join(web, 'public', 'vendor', 'genprm');
if (!existsSync(join(pkg, 'dist', 'index.js'))) {
  console.error('vendor-pkg: pkg/dist is missing (npm run build --prefix pkg)');
  process.exit(1);
}
await rm(out, { recursive: true, force: true });
await cp(join(pkg, 'dist'), join(out, 'dist'), { recursive: true });
for (const f of ['package.json', 'README.md']) await cp(join(pkg, f), join(out, f));
console.log(`the package is in ${out}`);
