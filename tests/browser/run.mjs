#!/usr/bin/env node
// The browser tests: serves the built app (web/dist, from `npm run build --prefix web`) on
// 127.0.0.1 and drives system Chromium with playwright-core.
//
//   node tests/browser/run.mjs            all suites
//   node tests/browser/run.mjs executor   suites whose name contains "executor"
//   node tests/browser/run.mjs --require-all   skipped tests fail the run (CI)
//
// Suites: executor (the Pyodide worker), app (page, editor, sources, bad input), bad-input
// (hostile model folders and malformed grading files, each a clear message), e2e (the tiny
// model verified in the page against the native CLI; needs pkg/wasm and the genprm binary),
// widget (<genprm-verifier> from the built package in a host page with hostile CSS), grade (the
// grading page: a JSONL with a bad row, a reload mid-run, exports), bench (the benchmark page,
// small shape), offline (the service worker: a reload with the server stopped), package-install
// (a copy of pkg/ packed outside the repository, installed with npm into a Vite + TypeScript site
// and a page with no bundler, each verifying with the widget). The new suites use the wasm CPU
// device and the tiny demo model.
// Screenshots go to tests/artifacts/. Exit status 1 when a test fails.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { launch } from './lib/browser.mjs';
import { serve } from './lib/server.mjs';
import { makeBrokenModels } from './lib/fixtures.mjs';
import { Skip } from './lib/assert.mjs';
import { ARTIFACTS, DIST } from './lib/paths.mjs';

const SUITES = ['executor', 'app', 'bad-input', 'e2e', 'widget', 'grade', 'bench', 'offline', 'package-install'];
// --require-all (or GENPRM_BROWSER_REQUIRE_ALL=1): a skipped test (no pkg/wasm, no genprm binary)
// fails the run, for CI where everything is built.
const requireAll = process.argv.includes('--require-all') || process.env.GENPRM_BROWSER_REQUIRE_ALL === '1';
const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const chosen = SUITES.filter((s) => filters.length === 0 || filters.some((f) => s.includes(f)));

if (!existsSync(join(DIST, 'index.html'))) {
  console.error('web/dist is missing: build the app first (npm ci --prefix web && npm run build --prefix web)');
  process.exit(2);
}
await mkdir(ARTIFACTS, { recursive: true });

const fixtures = await makeBrokenModels();
const server = await serve(DIST, { '/__test__/': fixtures, '/__spa__/': { dir: fixtures, spa: true } });
const browser = await launch();
let passed = 0, failed = 0, skipped = 0;
const started = Date.now();

try {
  for (const name of chosen) {
    const suite = await import(`./${name}.test.mjs`);
    const ctx = { browser, server, artifacts: ARTIFACTS, fixtures };
    if (suite.setup) {
      const why = await suite.setup(ctx);
      if (typeof why === 'string') {
        console.log(`SKIP ${name}: ${why}`);
        skipped += suite.tests.length;
        continue;
      }
    }
    for (const t of suite.tests) {
      const t0 = Date.now();
      try {
        await t.fn(ctx);
        passed++;
        console.log(`ok   ${name} › ${t.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        if (e instanceof Skip) {
          skipped++;
          console.log(`skip ${name} › ${t.name}: ${e.message}`);
          continue;
        }
        failed++;
        console.log(`FAIL ${name} › ${t.name}\n     ${String(e.stack || e).split('\n').join('\n     ')}`);
      }
    }
    await suite.teardown?.(ctx);
  }
} finally {
  await browser.close();
  await server.close();
}
console.log(`browser tests: ${passed} passed, ${failed} failed, ${skipped} skipped (${((Date.now() - started) / 1000).toFixed(0)} s)`);
if (requireAll && skipped > 0) console.log('skipped tests count as failures here (--require-all)');
process.exit(failed > 0 || (requireAll && skipped > 0) ? 1 : 0);
