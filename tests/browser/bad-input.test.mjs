// Bad input as the browser reads it (issue 22): hostile model folders loaded by URL in the demo
// page, and malformed grading files picked in the grading page. Each must end in one clear
// message naming the file and the field, line or tensor, with no model loaded, nothing
// requested outside the model's folder, and no uncaught error.
import { equal, ok } from './lib/assert.mjs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { genprmBinary, TINY } from './lib/fixtures.mjs';
import { wasmMissing } from './lib/wasm.mjs';

let page;
const errors = [];

export async function setup({ browser }) {
  const why = wasmMissing();
  if (why) return why;
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
}

export async function teardown() {
  await page?.close();
}

/** Loads the model at `url` (as typed in the page's URL field) in a fresh page; resolves once
 *  the load ended, with whether a model loaded and the page's alerts. */
async function loadURL(server, url) {
  await page.goto(server.url);
  await page.getByTestId('source-url').check();
  await page.getByTestId('model-url').fill(url);
  await page.getByTestId('load-model').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=model-info]')?.dataset.loaded !== undefined
    && !document.querySelector('[data-testid=load-model]').disabled, null, { timeout: 120_000 });
  return { loaded: await page.getByTestId('model-info').getAttribute('data-loaded') === 'true', alerts: await page.getByRole('alert').allTextContents() };
}

/** Loads the model folder `name` (under the server's `mount`) by URL in a fresh page and returns the page's error message. */
async function loadError(server, name, mount = '__test__') {
  const { loaded } = await loadURL(server, `${server.url}${mount}/models/${name}/`);
  equal(loaded, false, `${name}: no model loaded`);
  const alert = page.getByRole('alert').first();
  await alert.waitFor();
  return alert.textContent();
}

/** A copy of the tiny model at `dir` whose chat template is in tokenizer_config.json, with no chat_template.jinja. */
async function templateInConfig(dir) {
  await rm(dir, { recursive: true, force: true });
  await cp(TINY, dir, { recursive: true });
  const config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
  config.chat_template = await readFile(join(dir, 'chat_template.jinja'), 'utf8');
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  await rm(join(dir, 'chat_template.jinja'));
  return dir;
}

/** `genprm quantize --to q4` of `source` into `pack`. */
async function quantize(source, pack) {
  if (!existsSync(genprmBinary())) throw new Error(`the native CLI ${genprmBinary()} is not built (cargo build --bin genprm)`);
  await rm(pack, { recursive: true, force: true });
  execFileSync(genprmBinary(), ['quantize', '--model', source, '--to', 'q4', '--out', pack], { stdio: 'pipe' });
}

/** Loads the folder `dir`, served at the site path `prefix`, by that path; checks it loaded with
 *  no console error, and returns the names asked of the folder and those it has. */
async function loadFolder(server, dir, prefix) {
  const has = new Set(readdirSync(dir));
  const asked = server.requests.length;
  const before = errors.length;
  const { loaded, alerts } = await loadURL(server, prefix);
  equal(loaded, true, `${prefix} loads: ${alerts}`);
  equal(errors.slice(before), [], `console errors while loading ${prefix}`);
  const names = server.requests.slice(asked).filter((u) => u.startsWith(prefix)).map((u) => decodeURIComponent(u.slice(prefix.length).split('?')[0]));
  return { names, has };
}

const modelCase = (name, what, check) => ({
  name: `a model with ${what} is refused with a clear message`,
  fn: async ({ server }) => {
    const text = await loadError(server, name);
    ok(check(text), `${name}: ${text}`);
  },
});

/** Picks a grading file in the grading page and returns what the page says about it. */
async function pickGradingFile(server, name, body) {
  await page.goto(server.url + 'grade.html');
  await page.getByTestId('grade-file').setInputFiles({ name, mimeType: 'text/plain', buffer: Buffer.from(body) });
  await page.waitForFunction(() => (document.querySelector('[data-testid=file-info]')?.textContent ?? '')
    || document.querySelector('[role=alert]')?.textContent, null, { timeout: 60_000 });
  return `${await page.getByTestId('file-info').textContent()} ${await page.locator('[role=alert]').allTextContents()}`;
}

export const tests = [
  modelCase('hostile-huge-layers', 'a billion layers in config.json',
    (t) => /config\.json/.test(t) && /num_hidden_layers/.test(t)),
  modelCase('hostile-fewer-layers', 'fewer layers in config.json than in its weights',
    (t) => /config\.json/.test(t) && /num_hidden_layers/.test(t) && /model\.layers\.3/.test(t)),
  modelCase('hostile-offset-overflow', 'tensor offsets past 2^64',
    (t) => /model\.safetensors/.test(t) && /model\.norm\.weight/.test(t)),
  modelCase('hostile-overlap', 'two tensors over the same bytes',
    (t) => /model\.safetensors/.test(t) && /overlap/i.test(t)),
  modelCase('hostile-nan', 'a NaN weight',
    (t) => /model\.norm\.weight/.test(t) && /NaN|finite/i.test(t)),
  modelCase('hostile-index-dotdot', 'an index whose shards lie outside its folder (..)',
    (t) => /model\.safetensors\.index\.json/.test(t) && /weight_map/.test(t)),
  modelCase('hostile-index-encoded', 'an index whose shards lie outside its folder (%2e%2e)',
    (t) => /model\.safetensors\.index\.json/.test(t) && /weight_map/.test(t)),
  {
    name: 'nothing outside a model\'s folder was requested',
    fn: async ({ server }) => {
      const outside = server.requests.filter((r) => /\/secret\//.test(r) || /%2e%2e/i.test(r));
      equal(outside, [], 'requests outside the loaded folders');
    },
  },
  {
    name: 'a server that answers unknown paths with its web page (status 200): the model loads, no HTML is cached, a missing config.json is named as such',
    fn: async ({ server }) => {
      // The optional files (a pack manifest, a shard index, ...) come back as HTML: absent.
      const { loaded, alerts } = await loadURL(server, `${server.url}__spa__/models/secret/`);
      equal(loaded, true, `the model loads: ${alerts}`);
      const cachedTypes = await page.evaluate(async () => {
        const cache = await caches.open('genprm-models-v1');
        const out = [];
        for (const req of await cache.keys()) out.push([req.url, (await cache.match(req)).headers.get('content-type')]);
        return out;
      });
      ok(cachedTypes.length > 0, 'the model files were cached');
      equal(cachedTypes.filter(([, type]) => /html/.test(type ?? '')), [], 'no HTML page is cached as a model file');
      // No config.json at all: the message names its URL and says a web page came back.
      const text = await loadError(server, 'nothing-here', '__spa__');
      ok(/config\.json/.test(text) && /HTML page/.test(text) && /__spa__\/models\/nothing-here\/config\.json/.test(text), text);
    },
  },
  {
    name: 'a model at a path on the site (/models/x/, ./models/x) loads, resolved against the page',
    fn: async ({ server }) => {
      for (const path of ['/__test__/models/secret/', './__test__/models/secret']) {
        const { loaded, alerts } = await loadURL(server, path);
        equal(loaded, true, `${path} loads: ${alerts}`);
      }
    },
  },
  {
    name: 'a CSV with a quote never closed names its line; the rows before it are not lost silently',
    fn: async ({ server }) => {
      const text = await pickGradingFile(server, 'class.csv', 'id,problem,solution\na,p,fine\nb,p,"an open quote\nc,p,lost\n');
      ok(/class\.csv, line 3/.test(text) && /never closed/.test(text), text);
    },
  },
  {
    name: 'a grading file with one id twice names both lines',
    fn: async ({ server }) => {
      const rows = [{ id: 's1', problem: 'p', steps: ['a'] }, { id: 's2', problem: 'p', steps: ['a'] }, { id: 's1', problem: 'q', steps: ['b'] }];
      const text = await pickGradingFile(server, 'class.jsonl', rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      ok(/1 of them unreadable/.test(text) && /line 3/.test(text) && /"s1"/.test(text) && /line 1/.test(text), text);
    },
  },
  {
    name: 'a CSV from an old Mac (lines ended by a lone CR) reads each row on its own line',
    fn: async ({ server }) => {
      const text = await pickGradingFile(server, 'mac.csv', 'id,problem,solution\ra,p,x\rb,q,y\r\nc,r,z\n');
      ok(/mac\.csv: 3 solutions\./.test(text), text);
    },
  },
  {
    // The loader probes optional files (a pack's manifest, a shard index); for a Hugging Face
    // repo the source asks the repository's file list of its API first, so the probes make no
    // request and log no 404. huggingface.co is played by a route serving the tiny model.
    name: 'a Hugging Face repo id loads with no request for a file the repository does not list, and no console error',
    fn: async ({ server }) => {
      const files = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'];
      const requested = [];
      const context = page.context();
      const cors = { 'access-control-allow-origin': '*' };
      await context.route('https://huggingface.co/**', async (route) => {
        const url = route.request().url();
        requested.push(url);
        if (url === 'https://huggingface.co/api/models/someone/tiny-genprm/revision/main') {
          return route.fulfill({ status: 200, headers: cors, contentType: 'application/json', body: JSON.stringify({ id: 'someone/tiny-genprm', siblings: files.map((rfilename) => ({ rfilename })) }) });
        }
        const name = url.replace('https://huggingface.co/someone/tiny-genprm/resolve/main/', '');
        if (!files.includes(name)) return route.fulfill({ status: 404, headers: cors, body: 'Entry not found' });
        return route.fulfill({ status: 200, headers: cors, contentType: 'application/octet-stream', body: await readFile(join(TINY, name)) });
      });
      try {
        const before = errors.length;
        const { loaded, alerts } = await loadURL(server, 'someone/tiny-genprm');
        equal(loaded, true, `the repository's model loads: ${alerts}`);
        ok(requested.some((u) => u.includes('/api/models/someone/tiny-genprm/')), `the file list was asked for: ${requested}`);
        equal(requested.filter((u) => /genprm-pack\.json|model\.safetensors\.index\.json/.test(u)), [], 'requests for files the repository does not list');
        equal(errors.slice(before), [], 'console errors while loading');
      } finally {
        await context.unroute('https://huggingface.co/**');
      }
    },
  },
  {
    // A site's folder has no file list, so each request for a file it lacks logs a 404: a plain
    // checkpoint (one model.safetensors) is read without asking for any, whether its template is
    // in chat_template.jinja or (as in many on Hugging Face) in tokenizer_config.json.
    name: 'a plain checkpoint folder at a path on the site loads with no request for a file it lacks and no console error',
    fn: async ({ server, fixtures }) => {
      const inConfig = await templateInConfig(join(fixtures, 'models', 'site-plain'));
      const asFile = join(fixtures, 'models', 'site-plain-jinja');
      await rm(asFile, { recursive: true, force: true });
      await cp(TINY, asFile, { recursive: true });
      for (const folder of [inConfig, asFile]) {
        const name = folder.split('/').pop();
        const { names, has } = await loadFolder(server, folder, `/__test__/models/${name}/`);
        ok(names.includes('model.safetensors') && names.includes('tokenizer_config.json'), `${name} was read by URL: ${names}`);
        equal(names.filter((n) => !has.has(n)), [], `files asked of ${name} that it does not have`);
      }
    },
  },
  {
    name: 'a q4 pack at a path on the site loads with no request for a file its folder lacks (its manifest lists them) and no console error',
    fn: async ({ server, fixtures }) => {
      // A checkpoint whose chat template is in tokenizer_config.json: its pack has no
      // chat_template.jinja, which a loader without the manifest's list would ask for.
      const source = await templateInConfig(join(fixtures, 'site-pack-source'));
      const pack = join(fixtures, 'models', 'site-pack');
      await quantize(source, pack);
      const config = JSON.parse(await readFile(join(pack, 'config.json'), 'utf8'));
      equal(config.quantization_config?.quant_method, 'genprm-pack', 'the pack\'s config.json says it is a pack');
      const { names, has } = await loadFolder(server, pack, '/__test__/models/site-pack/');
      ok(!has.has('chat_template.jinja'), 'the pack has no chat_template.jinja');
      ok(names.includes('genprm-pack.json') && names.includes('weights-00001.bin'), `the pack was read by URL: ${names}`);
      equal(names.filter((n) => !has.has(n)), [], 'files asked of the pack\'s folder that it does not have');
      // A pack is loaded as it is: an explicit quant it cannot honour is refused, not ignored.
      const refused = await page.evaluate(async () => {
        const g = await import('/vendor/genprm/dist/index.js');
        const load = (quant) => g.loadModel('/__test__/models/site-pack/', { device: 'cpu', quant }).then((m) => { m.free(); return 'loaded'; }, (e) => e.message);
        return { q8: await load('q8'), q4: await load('q4') };
      });
      ok(/is a q4 pack/.test(refused.q8) && /quant q8 cannot apply/.test(refused.q8), `quant q8 of a q4 pack: ${refused.q8}`);
      equal(refused.q4, 'loaded', 'quant q4 of a q4 pack');
    },
  },
  {
    // A model kept in the Cache API is checked against the server on each load (a HEAD request per
    // file): unchanged, nothing is downloaded again; replaced (here a plain folder by a q4 pack
    // at the same path), the new files are read, not the kept ones.
    name: 'a model on the site that is replaced is read anew on the next load; unchanged, it comes from the cache with HEAD requests only',
    fn: async ({ server, fixtures }) => {
      const dir = await templateInConfig(join(fixtures, 'models', 'site-update'));
      const prefix = '/__test__/models/site-update/';
      const first = await loadFolder(server, dir, prefix);
      ok(first.names.includes('model.safetensors'), `first: the plain folder's weights: ${first.names}`);
      const asked = server.requests.length;
      await loadFolder(server, dir, prefix);
      const again = server.requests.slice(asked).map((u, i) => [server.methods[asked + i], u]).filter(([, u]) => u.startsWith(prefix));
      ok(again.length > 0 && again.every(([m]) => m === 'HEAD'), `unchanged, each kept file was checked with HEAD only: ${JSON.stringify(again)}`);
      const pack = join(fixtures, 'site-update-pack');
      await quantize(dir, pack);
      await rm(dir, { recursive: true, force: true });
      await cp(pack, dir, { recursive: true });
      const { names } = await loadFolder(server, dir, prefix);
      ok(names.includes('genprm-pack.json') && names.includes('weights-00001.bin') && !names.includes('model.safetensors'),
        `then: the pack that replaced it, read by its manifest: ${names}`);
    },
  },
  {
    // urlSource() takes a path on the site as loadModel() does (resolved against the page).
    name: 'urlSource() with a path on the site and the folder\'s file list loads, asking for no other file',
    fn: async ({ server, fixtures }) => {
      const dir = await templateInConfig(join(fixtures, 'models', 'site-listed'));
      const prefix = '/__test__/models/site-listed/';
      const files = readdirSync(dir);
      const asked = server.requests.length;
      const got = await page.evaluate(async ({ prefix, files }) => {
        const g = await import('/vendor/genprm/dist/index.js');
        const model = await g.loadModel(g.urlSource('a site folder', prefix.slice(0, -1), () => {}, { cache: false, files }), { device: 'cpu' });
        const info = model.info;
        model.free();
        return { layers: info.layers };
      }, { prefix, files });
      ok(got.layers > 0, `loaded: ${JSON.stringify(got)}`);
      const names = server.requests.slice(asked).filter((u) => u.startsWith(prefix)).map((u) => u.slice(prefix.length));
      equal(names.filter((n) => !files.includes(n)), [], 'files asked for that the list does not have');
    },
  },
  {
    // `models/x` has a Hugging Face id's form; written on a page whose folder holds models/x/, the
    // failed load says so. A load cancelled part-way rejects with an AbortError.
    name: 'loadModel("models/x") that fails as a Hugging Face id names the site folder of that name; a cancelled load rejects with an AbortError',
    fn: async ({ server, fixtures }) => {
      const dir = await templateInConfig(join(fixtures, 'models', 'site-named'));
      await writeFile(join(fixtures, 'named.html'), '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>named</title><link rel="icon" href="data:,"></head><body></body></html>');
      await page.context().route('https://huggingface.co/**', (route) => route.abort('namenotresolved'));
      try {
        await page.goto(`${server.url}__test__/named.html`);
        const got = await page.evaluate(async () => {
          const g = await import('/vendor/genprm/dist/index.js');
          const named = await g.loadModel('models/site-named', { device: 'cpu' }).then(() => 'loaded', (e) => e.message);
          const stop = new AbortController();
          const cancelled = await g.loadModel('./models/site-named/', {
            device: 'cpu', cache: false, signal: stop.signal,
            onProgress: (p) => { if (p.phase === 'load' && p.stage === 'tokenizer') stop.abort(); },
          }).then(() => 'loaded', (e) => e.name);
          return { named, cancelled };
        });
        ok(/huggingface\.co/.test(got.named) && got.named.includes('this site has a model folder at ./models/site-named/'), `the error names the site's folder: ${got.named}`);
        equal(got.cancelled, 'AbortError', 'a cancelled load');
        ok(readdirSync(dir).length > 0, 'the folder');
      } finally {
        await page.context().unroute('https://huggingface.co/**');
      }
    },
  },
  {
    // Packs written before config.json was marked (and before the manifest listed the folder)
    // are found by their manifest once no safetensors weights are there.
    name: 'a pack made before config.json was marked still loads at a path on the site',
    fn: async ({ server, fixtures }) => {
      const pack = join(fixtures, 'models', 'site-pack-unmarked');
      await quantize(TINY, pack);
      const config = await readFile(join(TINY, 'config.json'));
      await writeFile(join(pack, 'config.json'), config);
      const manifest = JSON.parse(await readFile(join(pack, 'genprm-pack.json'), 'utf8'));
      manifest.config_sha256 = createHash('sha256').update(config).digest('hex');
      delete manifest.files;
      await writeFile(join(pack, 'genprm-pack.json'), JSON.stringify(manifest));
      const { loaded, alerts } = await loadURL(server, '/__test__/models/site-pack-unmarked/');
      equal(loaded, true, `the pack loads: ${alerts}`);
      ok(/q4/.test(await page.getByTestId('model-info').textContent()), 'loaded as a q4 pack');
    },
  },
  {
    name: 'no uncaught errors',
    fn: async () => equal(errors.filter((e) => !/status of 404/.test(e)), [], 'page errors'),
  },
];
