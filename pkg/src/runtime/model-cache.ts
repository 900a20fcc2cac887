// Downloaded model files live in the Cache API: the body streams through a byte counter into
// `cache.put` (a multi-GB file never sits in memory), then `cache.match(url).blob()` hands the
// wasm side a disk-backed Blob it reads piece by piece. A reload finds the files there, offline.
// With `revalidate`, a kept file is checked against the server first (a HEAD request: its ETag,
// Last-Modified or size against those kept with it), so a site that replaces its model is read
// anew, while offline, or where the server cannot say, the kept copy serves.
import { WEB_PAGE_TYPE } from '../contract/types.ts';

export const CACHE_NAME = 'genprm-models-v1';

// The server's validators, kept with each file's entry.
const KEPT_ETAG = 'x-genprm-etag';
const KEPT_MODIFIED = 'x-genprm-last-modified';

export interface DownloadProgress { name: string; url: string; loaded: number; total: number | undefined; fromCache?: boolean }

/** A download that could not be completed (the message says why and which URL). */
export class DownloadError extends Error {
  constructor(message: string, readonly status?: number) { super(message); }
}

/** Whether the browser gives this page the Cache API (not in private mode, not without HTTPS):
 *  only then are downloads kept. */
export function cacheAvailable(): boolean {
  return typeof caches !== 'undefined';
}

/** The cached file, or null. An HTML page stored by an earlier version for a model file is
 * removed, not returned (see {@link htmlInstead}). */
export async function cached(url: string): Promise<Blob | null> {
  const hit = await cachedEntry(url);
  return hit ? hit.blob() : null;
}

async function cachedEntry(url: string): Promise<Response | null> {
  if (!cacheAvailable()) return null;
  const cache = await caches.open(CACHE_NAME);
  const hit = await cache.match(url);
  if (hit && htmlInstead(url, hit.headers.get('content-type'))) {
    await cache.delete(url).catch(() => undefined);
    return null;
  }
  return hit ?? null;
}

/**
 * Whether the kept copy of `url` (its entry, `size` bytes) is still what the server has: a HEAD
 * request's ETag, else its Last-Modified, else its size, against those kept with the copy.
 * True where the server cannot say (offline, no HEAD, no validator); `false` when it changed;
 * why it is absent when the server no longer has it (a 404, or its web page instead).
 */
async function stillCurrent(url: string, kept: Response, size: number, signal?: AbortSignal): Promise<boolean | Absent> {
  let res: Response;
  try {
    res = await fetch(url, { method: 'HEAD', cache: 'no-store', signal, mode: 'cors', credentials: 'omit' });
  } catch (e) {
    if ((e as Error)?.name === 'AbortError') throw e;
    return true;
  }
  if (res.status === 404 || res.status === 410) return { absent: `${url} answered ${res.status}: the server no longer has it (the copy kept in this browser was dropped)` };
  if (res.ok && htmlInstead(url, res.headers.get('content-type'))) {
    return { absent: `${url} answered with an HTML page (status ${res.status}): the server no longer has it (the copy kept in this browser was dropped)` };
  }
  if (!res.ok) return true;
  const same = (now: string | null, then: string | null) => (now && then ? now === then : null);
  const length = res.headers.get('content-encoding') ? null : res.headers.get('content-length');
  return same(res.headers.get('etag'), kept.headers.get(KEPT_ETAG))
    ?? same(res.headers.get('last-modified'), kept.headers.get(KEPT_MODIFIED))
    ?? (length !== null ? Number(length) === size : true);
}

/**
 * Whether a response of this type for `url` is a web page standing in for a model file: a
 * server that answers unknown paths with its index page and status 200 (Vite's dev server,
 * every single-page-app rewrite rule). No model file is HTML.
 */
export function htmlInstead(url: string, contentType: string | null): boolean {
  return WEB_PAGE_TYPE.test(contentType ?? '') && !/\.html?(\?|#|$)/i.test(url);
}

/** A file the server does not have: why (for the loader's errors), never cached. */
export interface Absent { absent: string }

/**
 * Downloads `url` into the cache (unless it is there) and returns it as a Blob, or why the
 * server has no such file: a 404, or an HTML page where the file should be (a single-page
 * app's fallback; see {@link htmlInstead}). Other HTTP errors, network failures and short
 * bodies throw a DownloadError. With `revalidate`, a kept copy serves only while the server
 * has the same file (see {@link stillCurrent}); a changed one is downloaded again.
 */
export async function download(url: string, name: string, onProgress: (p: DownloadProgress) => void,
  options: { cache: boolean; signal?: AbortSignal; revalidate?: boolean }): Promise<Blob | Absent> {
  if (url.startsWith('data:')) {
    const blob = dataURLBlob(url, name);
    onProgress({ name, url, loaded: blob.size, total: blob.size });
    return blob;
  }
  if (options.cache) {
    const hit = await cachedEntry(url);
    if (hit) {
      const blob = await hit.blob();
      const current = options.revalidate ? await stillCurrent(url, hit, blob.size, options.signal) : true;
      if (current === true) {
        onProgress({ name, url, loaded: blob.size, total: blob.size, fromCache: true });
        return blob;
      }
      await (await caches.open(CACHE_NAME)).delete(url).catch(() => undefined);
      if (current !== false) return current;
    }
  }
  let res: Response;
  try {
    res = await fetch(url, { signal: options.signal, mode: 'cors', credentials: 'omit' });
  } catch (e) {
    if ((e as Error)?.name === 'AbortError') throw e;
    throw new DownloadError(`could not download ${url}: ${(e as Error)?.message ?? e} (offline, or the server does not allow this site to read it)`);
  }
  if (res.status === 404) return { absent: `${url} answered 404 Not Found` };
  if (res.ok && htmlInstead(url, res.headers.get('content-type'))) {
    await res.body?.cancel().catch(() => undefined);
    return { absent: `${url} answered with an HTML page (status ${res.status}), not ${name}: the server has no such file and sent its web page instead (a single-page app's fallback?)` };
  }
  if (res.status === 401 || res.status === 403) {
    throw new DownloadError(`${url} answered HTTP ${res.status}: the repository does not exist or needs a login (gated or private models cannot be downloaded here; pick the files from disk instead)`, res.status);
  }
  if (!res.ok) throw new DownloadError(`${url} answered HTTP ${res.status} ${res.statusText}`.trim(), res.status);
  const lengthHeader = res.headers.get('content-length');
  const total = lengthHeader ? Number(lengthHeader) : undefined;
  const encoded = !!res.headers.get('content-encoding');
  let loaded = 0;
  let lastReport = 0;
  let reported = -1;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      loaded += chunk.byteLength;
      const now = performance.now();
      if (now - lastReport > 100) { lastReport = now; reported = loaded; onProgress({ name, url, loaded, total }); }
      controller.enqueue(chunk);
    },
  });
  // The last report, unless the counter already made it.
  const reportDone = () => { if (reported !== loaded || total === undefined) onProgress({ name, url, loaded, total: total ?? loaded }); };
  const body = res.body ? res.body.pipeThrough(counter) : null;
  const checkLength = () => {
    if (total !== undefined && !encoded && loaded < total) {
      throw new DownloadError(`the download of ${url} ended early: ${loaded} of ${total} bytes (connection lost?). Load the model again to retry.`);
    }
  };
  if (!options.cache || !cacheAvailable()) {
    const blob = await new Response(body).blob();
    checkLength();
    reportDone();
    return blob;
  }
  const cache = await caches.open(CACHE_NAME);
  const headers = new Headers({ 'content-type': res.headers.get('content-type') ?? 'application/octet-stream' });
  const etag = res.headers.get('etag');
  const modified = res.headers.get('last-modified');
  if (etag) headers.set(KEPT_ETAG, etag);
  if (modified) headers.set(KEPT_MODIFIED, modified);
  try {
    await cache.put(url, new Response(body, { status: 200, headers }));
    checkLength();
  } catch (e) {
    await cache.delete(url).catch(() => undefined);
    if ((e as Error)?.name === 'AbortError' || e instanceof DownloadError) throw e;
    if ((e as Error)?.name === 'QuotaExceededError') {
      throw new DownloadError(`not enough storage to keep ${name} (${total ? Math.round(total / 1e6) + ' MB' : 'size unknown'}): free disk space or clear cached models`);
    }
    throw new DownloadError(`could not download ${url}: ${(e as Error)?.message ?? e}`);
  }
  reportDone();
  const stored = await cache.match(url);
  if (!stored) throw new DownloadError(`${name} was downloaded but the browser did not keep it (storage full or private mode?)`);
  return stored.blob();
}

/** Total size and count of the cached model files. */
export async function cacheUsage(): Promise<{ files: number; bytes: number }> {
  if (!cacheAvailable()) return { files: 0, bytes: 0 };
  const cache = await caches.open(CACHE_NAME);
  let total = 0;
  const keys = await cache.keys();
  for (const req of keys) {
    const res = await cache.match(req);
    if (res) total += (await res.blob()).size;
  }
  return { files: keys.length, bytes: total };
}

export async function clearCache(): Promise<void> {
  if (cacheAvailable()) await caches.delete(CACHE_NAME);
}

/** Asks the browser not to evict the cache under storage pressure (best effort). */
export async function persistStorage(): Promise<boolean> {
  try { return (await navigator.storage?.persist?.()) ?? false; } catch { return false; }
}

/**
 * The bytes of a `data:` URL, decoded here rather than fetched: a bundler inlines small files as
 * data: URLs (Vite, below its 4 KiB `assetsInlineLimit`: the demo model's config files), and a
 * Content-Security-Policy whose connect-src has no `data:` (the package README's) would refuse
 * the fetch. The bytes are already in the page's own script.
 */
function dataURLBlob(url: string, name: string): Blob {
  const comma = url.indexOf(',');
  if (comma < 0) throw new DownloadError(`${name}: a malformed data: URL (no comma)`);
  const meta = url.slice('data:'.length, comma);
  const body = url.slice(comma + 1);
  const type = meta.split(';')[0] || 'text/plain';
  try {
    const bytes = /;base64$/i.test(meta)
      ? Uint8Array.from(atob(decodeURIComponent(body)), (c) => c.charCodeAt(0))
      : new TextEncoder().encode(decodeURIComponent(body));
    return new Blob([bytes], { type });
  } catch (e) {
    throw new DownloadError(`${name}: a malformed data: URL (${(e as Error)?.message ?? e})`);
  }
}
