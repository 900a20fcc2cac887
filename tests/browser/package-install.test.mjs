// The npm package the way a tutoring site gets it: a copy of pkg/ outside the repository is packed
// there (`npm pack`: prepack only checks that dist/ is complete), and the tarball is installed
// with npm into
//   (a) a fresh Vite + TypeScript site (vite and typescript at web/'s versions): its main.ts uses
//       <genprm-verifier> and the typed genprm-* events without casts, `tsc --noEmit` with the
//       package's own .d.ts checked too (skipLibCheck off), `vite build`, and nothing configured
//       for the run-time assets: Vite copies each (the package names each with a literal
//       new URL(), dist/runtime/asset-urls.js), in `vite build` and in `vite` (the dev server,
//       which pre-bundles the package); a third site copies them with the package's
//       `genprm-assets public/genprm` and says so with `configure({ assetsURL })` (for CDNs);
//   (b) a webpack 5 site (webpack-cli, no loaders or plugins), nothing configured either, and a
//       Rollup 4 site with the plugins and configuration pkg/README.md gives (Rollup copies no
//       asset and bundles no worker by itself);
//   (c) a plain page with no bundler and no build: an import map sends 'genprm' to
//       node_modules/genprm/dist/index.js, and the assets are found next to the modules; the page
//       has the Content-Security-Policy the README gives sites (CSP below).
// Each is served as built (tests/browser/lib/server.mjs; the dev server serves itself) and verifies the "apples" example with
// the widget and the package's demo model on the wasm CPU device: step 2 ("3 + 4 = 8") is flagged,
// in the package's engine worker (found by the bundler, or by the browser, from its new URL()),
// with no console errors and no failed requests. Also: a copy without dist/ refuses to pack and
// says what is missing and how to build it, and THIRD_PARTY_NOTICES.md lists the crates of the
// wasm build as Cargo.lock has them.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { equal, ok, Skip } from './lib/assert.mjs';
import { serve } from './lib/server.mjs';
import { REPO } from './lib/paths.mjs';

const run = promisify(execFile);
const LONG = 10 * 60_000;
// The bundler versions the webpack site installs (from npm, or its cache).
const WEBPACK = '5.113.0';
const WEBPACK_CLI = '7.3.1';
// The Rollup site's bundler and plugins (pkg/README.md's recipe).
const ROLLUP = {
  rollup: '4.69.3',
  '@rollup/plugin-node-resolve': '16.0.3',
  '@web/rollup-plugin-import-meta-assets': '2.3.3',
  '@surma/rollup-plugin-off-main-thread': '2.2.3',
};
const PKG = join(REPO, 'pkg');
const APPLES = {
  problem: 'Tom has 3 apples and buys 4 more. How many apples does he have?',
  steps: ['Tom starts with 3 apples.', 'He buys 4 more, so he has 3 + 4 = 8 apples.', 'The answer is 8.'],
};

let tmp, tarball, packed;

/** Runs a command; on failure the error carries its output. */
async function sh(cmd, args, cwd, env = {}) {
  try {
    return await run(cmd, args, { cwd, env: { ...process.env, npm_config_update_notifier: 'false', ...env }, maxBuffer: 64 << 20, timeout: LONG });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed:\n${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`);
  }
}

/** npm install of the tarball (and devDependencies from package.json), from the npm cache when it
 *  has them. */
async function npmInstall(dir) {
  await sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball], dir);
}

export async function setup() {
  const { wasmMissing } = await import('./lib/wasm.mjs');
  const why = wasmMissing();
  if (why) return why;
  if (!existsSync(join(PKG, 'dist', 'index.js'))) return 'pkg/dist is missing (npm run build --prefix pkg)';
  tmp = await mkdtemp(join(tmpdir(), 'genprm-package-'));
}

export async function teardown() {
  if (tmp && !process.env.GENPRM_KEEP_TMP) await rm(tmp, { recursive: true, force: true });
  else if (tmp) console.log(`     (kept ${tmp})`);
}

/** Opens `url`, verifies the apples example with the widget #w and returns what happened; requests
 *  whose URL matches `fail` fail as a network error would. */
async function verifyApples(browser, url, artifacts, shot, { fail } = {}) {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  if (fail) await page.route(fail, (route) => route.abort('connectionfailed'));
  page.setDefaultTimeout(LONG);
  const errors = [];
  const failed = [];
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location()?.url ?? ''})`); });
  page.on('requestfailed', (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.url()}: HTTP ${r.status()}`); });
  try {
    await page.goto(url);
    await page.waitForFunction(() => customElements.get('genprm-verifier') !== undefined);
    await page.locator('#w').getByRole('button', { name: 'Verify the steps' }).click();
    await page.waitForFunction(() => window.__events?.some((e) => e.type === 'done' || e.type === 'error'), null, { timeout: LONG });
    const got = await page.evaluate(() => ({
      events: window.__events,
      states: [...document.getElementById('w').shadowRoot.querySelectorAll('li.step')].map((li) => li.dataset.state),
      summary: document.getElementById('w').shadowRoot.querySelector('.summary')?.textContent ?? '',
      shown: document.getElementById('w').shadowRoot.textContent,
    }));
    await page.screenshot({ path: join(artifacts, shot), fullPage: true });
    // The bundler (or the browser, with no bundler) found the engine's worker from its new URL().
    const workers = page.workers().map((w) => w.url());
    return { ...got, errors, failed, workers, requests };
  } finally {
    await page.close();
  }
}

/** Serves `dir` (tests/browser/lib/server.mjs, with `mounts`) for `use(server)`, then stops it. */
async function withServer(dir, use, mounts = {}) {
  const server = await serve(dir, mounts);
  try {
    return await use(server);
  } finally {
    await server.close();
  }
}

/** A page's script that logs the widget #w's genprm-step, -done and -error events in
 *  window.__events, which verifyApples reads. */
const LOG_EVENTS = `window.__events = [];
const widget = document.getElementById('w');
for (const type of ['step', 'done', 'error']) widget.addEventListener('genprm-' + type, (e) => window.__events.push({ type, detail: e.detail }));`;

function checkApples(got, what, { worker = true } = {}) {
  const err = got.events.find((e) => e.type === 'error');
  ok(!err, `${what}: no genprm-error event: ${JSON.stringify(err?.detail)}`);
  const done = got.events.filter((e) => e.type === 'done');
  equal(done.length, 1, `${what}: one genprm-done event`);
  const result = done[0].detail;
  equal(result.complete, true, `${what}: complete`);
  equal(result.first_error_step, 1, `${what}: the first wrong step is step 2 ("3 + 4 = 8")`);
  const steps = got.events.filter((e) => e.type === 'step').map((e) => e.detail);
  ok(steps.length >= 2, `${what}: a genprm-step event for steps 1 and 2: ${JSON.stringify(steps)}`);
  equal(steps[0].correct, true, `${what}: step 1 judged right`);
  equal(steps[1].correct, false, `${what}: step 2 judged wrong`);
  equal(got.states.slice(0, 2), ['good', 'bad'], `${what}: the widget shows step 1 right and step 2 wrong`);
  ok(/step 2/i.test(got.summary), `${what}: the summary names step 2: ${got.summary}`);
  // Its name: the module's (engine-worker.js), or the Worker's `name` where webpack names chunks.
  equal(got.workers.some((u) => /engine-worker|genprm-engine/.test(u)), worker, `${what}: the model ran in the package's engine worker (${worker}): ${got.workers.map((u) => u.slice(0, 80))}`);
  // The demo source knows its files (DEMO_MODEL_FILES): the loader's probes for a pack's
  // manifest and a shard index make no request, so a working load logs nothing.
  equal(got.errors, [], `${what}: console errors`);
  equal(got.failed, [], `${what}: failed requests`);
}

// The policy pkg/README.md gives sites ("Content-Security-Policy"): the Python frame inherits the
// page's policy, so its inline script and its data: workers (with blob: modules) need
// 'unsafe-inline', data: and blob:; the engine's worker is a module from the page's origin
// ('self' in worker-src); the widget's shadow root has a <style>; WebAssembly needs
// 'wasm-unsafe-eval'.
const CSP = "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval' data: blob:; worker-src 'self' data:; "
  + "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'";

const WIDGET = `<genprm-verifier id="w" model="demo" device="cpu" greedy
  problem="${APPLES.problem}"
  steps='${JSON.stringify(APPLES.steps)}'></genprm-verifier>`;
// Sites have an icon; without one the browser asks for /favicon.ico, a 404 that is not the package's.
const ICON = '<link rel="icon" href="data:,">';

/** A site's page with the widget #w: `head` (its scripts, a policy) after the title. */
const sitePage = (title, head) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>${ICON}
${head}</head>
<body><h1>Check your steps</h1>
${WIDGET}
</body></html>
`;

/** A site in tmp/<name> built by a bundler: `devDependencies` (the bundler), the `build` command,
 *  its `config` file ([name, text]), a src/main.js that imports the package and logs the widget's
 *  events; the tarball installed and `npm run build` run. Returns the folder and the build's output. */
async function bundlerSite(name, { devDependencies, build, config: [configName, configText] }) {
  ok(tarball, 'the tarball (the first test)');
  const site = join(tmp, name);
  await mkdir(join(site, 'src'), { recursive: true });
  await writeFile(join(site, 'package.json'), JSON.stringify({
    name: `a-${name}`, private: true, type: 'module', scripts: { build }, devDependencies,
  }, null, 2));
  await writeFile(join(site, configName), configText);
  await writeFile(join(site, 'src', 'main.js'), `import 'genprm';
${LOG_EVENTS}
`);
  await npmInstall(site);
  const { stdout } = await sh('npm', ['run', 'build'], site);
  return { site, stdout };
}

/** Checks that `dir` holds an emitted file of each extension the package's assets have. */
async function emittedAssets(dir, what) {
  const emitted = await readdir(dir);
  for (const ext of ['wasm', 'zip', 'safetensors', 'txt']) ok(emitted.some((f) => f.endsWith(`.${ext}`)), `${what} copied the .${ext} assets: ${emitted.join(', ')}`);
}

/** A fresh Vite + TypeScript site in tmp/<name> with the tarball installed (once per name): its
 *  main.ts is `prelude` and then the typed event logging (no casts: a type error fails tsc). */
const sites = new Map();
async function viteSite(name, prelude, assetsStep = '') {
  ok(tarball, 'the tarball (the first test)');
  const app = join(tmp, name);
  if (sites.has(app)) return app;
  await mkdir(join(app, 'src'), { recursive: true });
  const web = JSON.parse(await readFile(join(REPO, 'web', 'package.json'), 'utf8')).devDependencies;
  await writeFile(join(app, 'package.json'), JSON.stringify({
    name: 'a-tutoring-site', private: true, type: 'module',
    scripts: { build: `${assetsStep}tsc --noEmit && vite build` },
    devDependencies: { typescript: web.typescript, vite: web.vite },
  }, null, 2));
  await writeFile(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', lib: ['ES2022', 'DOM', 'DOM.Iterable'],
      strict: true, noEmit: true, isolatedModules: true, skipLibCheck: false, types: [],
    },
    include: ['src'],
  }, null, 2));
  // The README's policy: Vite inlines the demo model's small files as data: URLs, which its
  // connect-src would refuse to fetch (the package decodes them itself).
  await writeFile(join(app, 'index.html'), sitePage('A tutoring site (Vite)', `<meta http-equiv="Content-Security-Policy" content="${CSP}">
<script type="module" src="/src/main.ts"></script>`));
  await writeFile(join(app, 'src', 'main.ts'), `${prelude}import { configure as configureGenprm } from 'genprm';
import type { VerifyResult } from 'genprm';

// ?page-thread: the model on the page's thread (as where workers cannot start).
if (new URLSearchParams(location.search).has('page-thread')) configureGenprm({ worker: false });

type Logged = { type: 'step'; detail: { index: number; reward: number; correct: boolean | null } }
  | { type: 'done'; detail: VerifyResult } | { type: 'error'; detail: { message: string; stage: string } };
const events: Logged[] = [];
(window as unknown as { __events: Logged[] }).__events = events;

const widget = document.querySelector('genprm-verifier');
if (!widget) throw new Error('no <genprm-verifier>');
widget.addEventListener('genprm-step', (e) => {
  const { index, reward, correct } = e.detail;
  events.push({ type: 'step', detail: { index, reward, correct } });
});
widget.addEventListener('genprm-done', (e) => events.push({ type: 'done', detail: e.detail }));
widget.addEventListener('genprm-error', (e) => events.push({ type: 'error', detail: { message: e.detail.message, stage: e.detail.stage } }));
`);
  await npmInstall(app);
  sites.set(app, true);
  return app;
}

/** Vite's dev server for `app` on a free port; resolves once it is listening. */
async function viteDev(app) {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [join(app, 'node_modules', 'vite', 'bin', 'vite.js'), '--port', '0', '--strictPort', '--host', '127.0.0.1'],
    { cwd: app, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let out = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vite dev did not start:\n${out}`)), 60_000);
    const seen = (chunk) => {
      out += chunk;
      const m = /Local:\s+(http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    child.stdout.on('data', seen);
    child.stderr.on('data', seen);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`vite dev exited (${code}):\n${out}`)); });
  });
  return { url, close: async () => { child.kill(); await new Promise((r) => child.once('exit', r)); } };
}

export const tests = [
  {
    name: 'a copy of pkg/ outside the repository packs (prepack only checks dist/): the tarball holds dist/, the README, the licences, the notices and genprm-assets, none of src/',
    fn: async () => {
      const copy = join(tmp, 'pkg');
      // pkg/wasm (scripts/build-wasm's output, copied into dist/wasm by the build) is not needed.
      await cp(PKG, copy, { recursive: true, filter: (src) => !src.includes('node_modules') && !/^wasm($|\.|\/)/.test(relative(PKG, src)) });
      const { stdout } = await sh('npm', ['pack', '--json', '--pack-destination', tmp], copy);
      packed = JSON.parse(stdout.slice(stdout.indexOf('[')))[0];
      tarball = join(tmp, packed.filename);
      ok(existsSync(tarball), `the tarball ${tarball}`);
      const files = new Set(packed.files.map((f) => f.path));
      const { ASSET_FILES, PACKAGE_FILES, WASM_FILES } = await import('../../pkg/scripts/check-dist.mjs');
      const want = [...PACKAGE_FILES, 'package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/widget.js', 'dist/widget.d.ts',
        ...WASM_FILES.map((f) => `dist/wasm/${f}`), ...ASSET_FILES.map((f) => `dist/assets/${f}`)];
      equal(want.filter((f) => !files.has(f)), [], 'files missing from the tarball');
      equal([...files].filter((f) => !f.startsWith('dist/') && !want.includes(f)), [], 'files outside dist/ that are not meant to ship');
    },
  },
  {
    name: 'a copy of pkg/ without a built dist/ refuses to pack, naming what is missing and the command that builds it',
    fn: async () => {
      const copy = join(tmp, 'pkg-unbuilt');
      await cp(PKG, copy, { recursive: true, filter: (src) => !src.startsWith(join(PKG, 'dist')) && !src.startsWith(join(PKG, 'wasm')) });
      let out = null;
      try {
        await run('npm', ['pack', '--dry-run'], { cwd: copy, maxBuffer: 16 << 20 });
      } catch (e) {
        out = `${e.stdout}${e.stderr}`;
      }
      ok(out !== null, 'npm pack failed');
      ok(/missing:[\s\S]*dist\/index\.js[\s\S]*dist\/wasm\/genprm_bg\.wasm[\s\S]*dist\/assets\/pyodide\/pyodide\.mjs/.test(out), `it names the missing files:\n${out}`);
      ok(/npm run build --prefix pkg/.test(out) && /scripts\/build-wasm/.test(out), `it says how to build them:\n${out}`);
      ok(!/web\/node_modules/.test(out), `it does not reach into web/:\n${out}`);
    },
  },
  {
    name: 'THIRD_PARTY_NOTICES.md lists the crates of the wasm build as Cargo.lock has them (pkg/scripts/notices.mjs --check)',
    fn: async () => {
      try {
        await run('cargo', ['--version']);
      } catch {
        throw new Skip('no cargo here');
      }
      await sh(process.execPath, [join(PKG, 'scripts', 'notices.mjs'), '--check'], REPO);
    },
  },
  {
    name: 'a Vite + TypeScript site with the README\'s Content-Security-Policy installs the tarball and configures nothing: tsc --noEmit and vite build pass, Vite copies the package\'s assets, and the widget flags step 2 of "apples" (in the engine worker, and on the page\'s thread) with no console errors or failed requests',
    fn: async ({ browser, artifacts }) => {
      const app = await viteSite('vite-site', '');
      await sh('npm', ['run', 'build'], app);
      // Each asset was copied by Vite, renamed as Vite names assets (dist/assets/<name>-<hash>.<ext>).
      const emitted = await readdir(join(app, 'dist', 'assets'));
      for (const name of ['pyodide.asm', 'python_stdlib', 'genprm-python', 'model', 'genprm_bg']) {
        ok(emitted.some((f) => f.startsWith(`${name}-`)), `vite build copied ${name}.*: ${emitted.join(', ')}`);
      }
      await withServer(join(app, 'dist'), async (server) => {
        checkApples(await verifyApples(browser, server.url, artifacts, 'package-vite.png'), 'Vite site');
        // On the page's thread the page's policy applies to the model's downloads too: the files
        // Vite inlined as data: URLs are decoded, not fetched (connect-src has no data:).
        checkApples(await verifyApples(browser, `${server.url}?page-thread`, artifacts, 'package-vite-page-thread.png'), 'Vite site, page thread', { worker: false });
      });
    },
  },
  {
    name: 'the same site under Vite\'s dev server (`vite`, which pre-bundles the package) flags step 2 of "apples" with no console errors or failed requests',
    fn: async ({ browser, artifacts }) => {
      const app = await viteSite('vite-site', '');
      const dev = await viteDev(app);
      try {
        checkApples(await verifyApples(browser, dev.url, artifacts, 'package-vite-dev.png'), 'Vite dev server');
      } finally {
        await dev.close();
      }
    },
  },
  {
    name: 'a Vite site that copies the assets itself (`genprm-assets public/genprm`, configure({ assetsURL }), as for a CDN) flags step 2 of "apples" with no console errors or failed requests, and asks nothing of the package\'s own copies',
    fn: async ({ browser, artifacts }) => {
      const app = await viteSite('vite-site-assets', `import { configure } from 'genprm';

// The package's run-time assets, copied by \`genprm-assets public/genprm\` (package.json).
configure({ assetsURL: '/genprm/' });
`, 'genprm-assets public/genprm && ');
      await sh('npm', ['run', 'build'], app);
      ok(existsSync(join(app, 'dist', 'genprm', 'pyodide', 'pyodide.asm.wasm')), 'genprm-assets copied the assets into the build');
      const got = await withServer(join(app, 'dist'), (server) => verifyApples(browser, server.url, artifacts, 'package-vite-assets.png'));
      checkApples(got, 'Vite site with assetsURL');
      const elsewhere = got.requests.filter((u) => /\.(wasm|zip|safetensors)$/.test(u) && !u.includes('/genprm/') && !/genprm(_relaxed)?_bg/.test(u));
      equal(elsewhere, [], 'assets fetched from outside assetsURL');
    },
  },
  {
    name: 'a webpack 5 site installs the tarball and configures nothing (webpack copies each asset named by the package\'s new URL()s): the widget flags step 2 of "apples" with no console errors or failed requests',
    fn: async ({ browser, artifacts }) => {
      const { site, stdout } = await bundlerSite('webpack-site', {
        devDependencies: { webpack: WEBPACK, 'webpack-cli': WEBPACK_CLI }, build: 'webpack',
        config: ['webpack.config.js', "export default { mode: 'production', entry: './src/main.js' };\n"],
      });
      ok(!/Critical dependency|ERROR/.test(stdout), `webpack built the package without an error or a "critical dependency" warning:\n${stdout}`);
      await emittedAssets(join(site, 'dist'), 'webpack');
      await writeFile(join(site, 'dist', 'index.html'), sitePage('A tutoring site (webpack)', '<script defer src="main.js"></script>'));
      checkApples(await withServer(join(site, 'dist'), (server) => verifyApples(browser, server.url, artifacts, 'package-webpack.png')), 'webpack site');
    },
  },
  {
    name: 'a Rollup 4 site with the plugins pkg/README.md names (node-resolve, import-meta-assets, off-main-thread and its file-URL fix) installs the tarball: the widget flags step 2 of "apples" in the engine worker with no console errors or failed requests',
    fn: async ({ browser, artifacts }) => {
      const readme = await readFile(join(PKG, 'README.md'), 'utf8');
      // The README's configuration, as a site copies it.
      const config = /```js\n(\/\/ rollup\.config\.js[\s\S]*?)```/.exec(readme)?.[1];
      ok(config, 'pkg/README.md gives a rollup.config.js');
      const { site } = await bundlerSite('rollup-site', { devDependencies: ROLLUP, build: 'rollup -c', config: ['rollup.config.js', config] });
      await emittedAssets(join(site, 'dist', 'assets'), 'Rollup');
      await writeFile(join(site, 'dist', 'index.html'), sitePage('A tutoring site (Rollup)', `<meta http-equiv="Content-Security-Policy" content="${CSP}">
<script type="module" src="main.js"></script>`));
      checkApples(await withServer(join(site, 'dist'), (server) => verifyApples(browser, server.url, artifacts, 'package-rollup.png')), 'Rollup site');
    },
  },
  {
    name: 'a page with no bundler (an import map to node_modules/genprm/dist/index.js, no configuration, the README\'s Content-Security-Policy) flags step 2 of "apples" with no console errors or failed requests',
    fn: async ({ browser, artifacts }) => {
      ok(tarball, 'the tarball (the first test)');
      ok((await readFile(join(PKG, 'README.md'), 'utf8')).includes(CSP), `pkg/README.md gives the policy tested here: ${CSP}`);
      const site = join(tmp, 'plain-site');
      await mkdir(site, { recursive: true });
      await writeFile(join(site, 'package.json'), JSON.stringify({ name: 'a-plain-site', private: true }, null, 2));
      await writeFile(join(site, 'index.html'), sitePage('A tutoring site (no bundler)', `<meta http-equiv="Content-Security-Policy" content="${CSP}">
<script type="importmap">{ "imports": { "genprm": "./node_modules/genprm/dist/index.js" } }</script>
<script type="module">
  import { GenprmVerifier } from 'genprm';
  if (!(document.getElementById('w') instanceof GenprmVerifier)) throw new Error('the element is not upgraded');
  ${LOG_EVENTS}
</script>`));
      await npmInstall(site);
      checkApples(await withServer(site, (server) => verifyApples(browser, server.url, artifacts, 'package-plain.png')), 'plain page');
    },
  },
  {
    name: 'assets missing on a single-page app\'s server (its index page, status 200, for every unknown path): the widget\'s error names the URL and says a web page came back, for the demo model\'s files and for the Python runtime\'s; the wasm module\'s, when it cannot be fetched at all, names its URL',
    fn: async ({ browser, artifacts }) => {
      const site = join(tmp, 'plain-site');
      ok(existsSync(join(site, 'node_modules', 'genprm')), 'the plain site (the test before)');
      // /genprm/ serves a copy of dist/assets without pyodide/; /nothing/ serves no asset at all.
      const partial = join(tmp, 'partial-assets');
      await cp(join(site, 'node_modules', 'genprm', 'dist', 'assets'), partial, { recursive: true, filter: (src) => !src.includes('pyodide') });
      const page = (base) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Assets elsewhere</title>${ICON}
<script type="importmap">{ "imports": { "genprm": "./node_modules/genprm/dist/index.js" } }</script>
<script type="module">
  import { configure } from 'genprm';
  configure({ assetsURL: '${base}' });
  ${LOG_EVENTS}
</script></head>
<body>${WIDGET}</body></html>
`;
      await writeFile(join(site, 'no-python.html'), page('/genprm/'));
      await writeFile(join(site, 'no-assets.html'), page('/nothing/'));
      await withServer(site, async (server) => {
        const error = async (path) => {
          const got = await verifyApples(browser, new URL(path, server.url).href, artifacts, `package-${path.replace('.html', '')}.png`);
          const err = got.events.find((e) => e.type === 'error');
          ok(err, `${path}: a genprm-error event: ${JSON.stringify(got.events.map((e) => e.type))}`);
          return { message: err.detail.message, stage: err.detail.stage, shown: got.shown };
        };
        const model = await error('no-assets.html');
        ok(model.message.includes(`${server.url}nothing/models/tiny-genprm/config.json`) && /HTML page/.test(model.message),
          `the model's error names the URL and the HTML page: ${model.message}`);
        const python = await error('no-python.html');
        ok(/pyodide/.test(python.message) && python.message.includes(`${server.url}genprm/pyodide/`) && /web page \(text\/html\)/.test(python.message),
          `the Python runtime's error names the URL and the web page: ${python.message}`);
        ok(python.stage === 'python', `the error's stage is 'python': ${python.stage}`);
        ok(python.shown.includes('web page'), 'the widget shows it');
        // The wasm module unreachable (a network error): the error names its URL.
        const got = await verifyApples(browser, server.url, artifacts, 'package-no-module.png', { fail: /_bg\.wasm$/ });
        const module = got.events.find((e) => e.type === 'error')?.detail.message ?? '';
        ok(/the genprm WebAssembly module: could not fetch http:\/\/\S+_bg\.wasm/.test(module), `the module's error names its URL: ${module}`);
      }, { '/genprm/': { dir: partial, spa: true }, '/nothing/': { dir: join(tmp, 'empty'), spa: true } });
    },
  },
];
