// A small static server on 127.0.0.1 for the built app (web/dist), with the right MIME types
// (application/wasm for streaming compilation). Extra roots can be mounted under a prefix, e.g.
// broken model directories the bad-input tests make.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json; charset=utf-8', '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf',
  '.zip': 'application/zip', '.jinja': 'text/plain; charset=utf-8', '.txt': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream', '.map': 'application/json',
};

export async function serve(root, mounts = {}) {
  const requests = [];
  const methods = [];
  const server = createServer(async (req, res) => {
    requests.push(req.url);
    methods.push(req.method);
    try {
      const url = new URL(req.url, 'http://127.0.0.1');
      let path = decodeURIComponent(url.pathname);
      let base = root;
      // A mount is a folder, or { dir, spa: true }: a single-page app's server, which answers
      // every unknown path with its index page and status 200.
      let spa = false;
      for (const [prefix, mount] of Object.entries(mounts)) {
        if (path.startsWith(prefix)) {
          base = typeof mount === 'string' ? mount : mount.dir;
          spa = typeof mount === 'object' && !!mount.spa;
          path = path.slice(prefix.length - 1);
          break;
        }
      }
      if (path.endsWith('/')) path += 'index.html';
      const file = normalize(join(base, path));
      if (file !== base && !file.startsWith(base + sep)) { res.writeHead(403).end(); return; }
      const st = await stat(file).catch(() => null);
      if ((!st || !st.isFile()) && spa) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'access-control-allow-origin': '*' })
          .end('<!doctype html><html><head><title>An app</title></head><body><div id="app"></div></body></html>');
        return;
      }
      if (!st || !st.isFile()) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found'); return; }
      // Validators as static servers send them (nginx: an ETag of mtime and size, and Last-Modified).
      res.writeHead(200, {
        'content-type': MIME[extname(file)] ?? 'application/octet-stream',
        'content-length': st.size,
        'cache-control': 'no-cache',
        'etag': `"${Math.floor(st.mtimeMs).toString(16)}-${st.size.toString(16)}"`,
        'last-modified': st.mtime.toUTCString(),
        'access-control-allow-origin': '*',
      });
      if (req.method === 'HEAD') { res.end(); return; }
      createReadStream(file).pipe(res);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  // `requests`: every request's path and query, in order (tests check what was never asked for);
  // `methods`: each one's method.
  return { url: `http://127.0.0.1:${port}/`, requests, methods, close: () => new Promise((r) => { server.close(r); server.closeAllConnections(); }) };
}
