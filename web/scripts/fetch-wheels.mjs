#!/usr/bin/env node
// Downloads the pure-Python wheels the Pyodide worker ships with (sympy and mpmath) from PyPI's
// JSON API, pinned by version and checked by SHA-256, into web/.cache/wheels/ (gitignored).
// A wheel already there with the right checksum is not downloaded again.
// GENPRM_PYPI_URL overrides the index (default https://pypi.org; it must serve /pypi/<name>/json).
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const WHEELS = [
  // sympy 1.14.0 requires mpmath >=1.1.0,<1.4.
  { name: 'sympy', version: '1.14.0', file: 'sympy-1.14.0-py3-none-any.whl',
    sha256: 'e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5' },
  { name: 'mpmath', version: '1.3.0', file: 'mpmath-1.3.0-py3-none-any.whl',
    sha256: 'a0b2b9fe80bbcd81a6647ff13108738cfb482d481d826cc0e02f5b35e5c88d2c' },
];

const here = dirname(fileURLToPath(import.meta.url));
export const WHEEL_DIR = join(here, '..', '.cache', 'wheels');
const INDEX = (process.env.GENPRM_PYPI_URL || 'https://pypi.org').replace(/\/+$/, '');

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

async function fetchWithRetry(url, what) {
  let lastError;
  for (let attempt = 1; attempt <= 4; attempt++) {
    try {
      const res = await fetch(url, { redirect: 'follow' });
      if (!res.ok) throw new Error(`HTTP ${res.status} for ${url}`);
      return res;
    } catch (e) {
      lastError = e;
      if (attempt < 4) await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
  throw new Error(`could not download ${what}: ${lastError?.message ?? lastError}`);
}

async function ensureWheel(w) {
  const dest = join(WHEEL_DIR, w.file);
  try {
    if (sha256(await readFile(dest)) === w.sha256) return dest;
  } catch { /* not there yet */ }
  const metaUrl = `${INDEX}/pypi/${w.name}/json`;
  const meta = await (await fetchWithRetry(metaUrl, `${w.name}'s PyPI metadata`)).json();
  const files = meta.releases?.[w.version] ?? [];
  const entry = files.find((f) => f.filename === w.file);
  if (!entry) throw new Error(`${w.file} is not listed for ${w.name} ${w.version} at ${metaUrl}`);
  if (entry.digests?.sha256 && entry.digests.sha256 !== w.sha256) {
    throw new Error(`${w.file}: PyPI lists sha256 ${entry.digests.sha256}, pinned ${w.sha256}`);
  }
  const url = new URL(entry.url, metaUrl).href; // PyPI gives absolute URLs, some mirrors relative ones
  const body = Buffer.from(await (await fetchWithRetry(url, w.file)).arrayBuffer());
  const got = sha256(body);
  if (got !== w.sha256) throw new Error(`${w.file}: sha256 ${got} does not match the pinned ${w.sha256}`);
  await writeFile(dest + '.part', body);
  await rename(dest + '.part', dest);
  console.log(`fetched ${w.file} (${(body.length / 1e6).toFixed(1)} MB)`);
  return dest;
}

export async function fetchWheels() {
  await mkdir(WHEEL_DIR, { recursive: true });
  const paths = [];
  for (const w of WHEELS) paths.push(await ensureWheel(w));
  return paths;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  fetchWheels().catch((e) => { console.error(`fetch-wheels: ${e.message}`); process.exit(1); });
}
