// The app's service worker (built into dist/sw.js by the `genprm-sw` plugin in vite.config.ts,
// which fills in the precache list, the relaxed-SIMD probe and a version hashed from the files'
// contents).
//
// On install it caches the app shell: the pages, the bundled scripts and styles, the wasm
// module, the Pyodide runtime, the sympy + mpmath bundle and the tiny demo model, so a reload
// with the network gone still works. Same-origin GETs are answered from that cache first; the
// package copy the embedding example loads (vendor/) is cached as it is fetched. Models
// downloaded from Hugging Face or a URL are not handled here: they are in the Cache API already
// (genprm-models-v1), which this worker never touches. A new version installs beside the old
// one, waits until the page says so (an "update ready" prompt) or every tab is closed, and then
// deletes the old version's caches.
const VERSION = '__GENPRM_VERSION__';
const PRECACHE = self.__GENPRM_PRECACHE__;
const APP_CACHE = `genprm-app-${VERSION}`;
const RUNTIME_CACHE = `genprm-runtime-${VERSION}`;
const OURS = /^genprm-(app|runtime)-/;

const scope = () => new URL(self.registration.scope);

// The wasm module comes in two builds (scripts/build-wasm): SIMD128, and relaxed SIMD for
// engines that have it. The page loads one (pkg/src/runtime/wasm.ts asks the same question with
// the same probe, pkg/src/runtime/relaxed-simd.ts, written in here by the build), so only that one
// is cached.
const RELAXED_SIMD_PROBE = new Uint8Array(self.__GENPRM_RELAXED_SIMD_PROBE__);
function hasRelaxedSimd() {
  try {
    return WebAssembly.validate(RELAXED_SIMD_PROBE);
  } catch {
    return false;
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(APP_CACHE);
    const unused = hasRelaxedSimd() ? /(^|\/)genprm_bg-[^/]*\.wasm$/ : /(^|\/)genprm_relaxed_bg-[^/]*\.wasm$/;
    const files = PRECACHE.filter((path) => !unused.test(path));
    // cache: 'reload' skips the HTTP cache, so a new version never stores a stale file.
    await cache.addAll(files.map((path) => new Request(new URL(path, scope()), { cache: 'reload' })));
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (OURS.test(name) && name !== APP_CACHE && name !== RUNTIME_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('message', (event) => {
  if (event.data === 'skip-waiting') self.skipWaiting();
  if (event.data === 'version') event.source?.postMessage({ type: 'version', version: VERSION });
});

async function fromCache(request, url) {
  const cache = await caches.open(APP_CACHE);
  if (request.mode === 'navigate') {
    // Pages are cached without their query (?model=demo); a directory means its index.html.
    const page = new URL(url);
    page.search = '';
    page.hash = '';
    if (page.pathname.endsWith('/')) page.pathname += 'index.html';
    return (await cache.match(page.href)) ?? (await cache.match(page.href.replace(/\.html$/, '')));
  }
  return cache.match(request);
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  const root = scope();
  if (url.origin !== root.origin || !url.pathname.startsWith(root.pathname)) return;
  if (url.pathname === new URL('sw.js', root).pathname) return;
  event.respondWith((async () => {
    const hit = await fromCache(request, url);
    if (hit) return hit;
    const runtime = url.pathname.startsWith(new URL('vendor/', root).pathname);
    try {
      const response = await fetch(request);
      if (runtime && response.ok && response.type === 'basic') {
        const copy = response.clone();
        event.waitUntil(caches.open(RUNTIME_CACHE).then((c) => c.put(request, copy)));
      }
      return response;
    } catch (e) {
      const cached = await caches.match(request, { cacheName: RUNTIME_CACHE });
      if (cached) return cached;
      // Offline, a file of the app's own directories that is not in the precache does not
      // exist (the list is complete): answer as the server would, so the model loader's probes
      // for optional files (genprm-pack.json, a shard index) see a 404, not a network error.
      const rel = url.pathname.slice(root.pathname.length);
      if (/^(generated|assets)\//.test(rel)) return new Response('not found', { status: 404, statusText: 'Not Found (offline)', headers: { 'content-type': 'text/plain' } });
      throw e;
    }
  })());
});
