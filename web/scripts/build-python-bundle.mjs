#!/usr/bin/env node
// Builds the Python bundle the Pyodide worker loads: sympy + mpmath unpacked from their PyPI
// wheels, compiled to bytecode by the very Pyodide the app ships (so the .pyc magic number matches
// its Python), sources and test suites dropped, zipped into web/.cache/python/genprm-python.zip.
// Importing sympy from bytecode takes about a second instead of compiling ~900 modules first.
// Rebuilt only when the wheels or the Pyodide version change (a stamp file records both).
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchWheels } from './fetch-wheels.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
export const BUNDLE_DIR = join(here, '..', '.cache', 'python');
export const BUNDLE_FILE = join(BUNDLE_DIR, 'genprm-python.zip');

export async function buildPythonBundle() {
  const wheels = await fetchWheels();
  const pyodideDir = dirname(require.resolve('pyodide/package.json'));
  const pyodideVersion = JSON.parse(await readFile(join(pyodideDir, 'package.json'), 'utf8')).version;
  const stamp = JSON.stringify({ pyodideVersion, wheels: wheels.map((w) => w.split('/').pop()), format: 2 });
  const stampFile = BUNDLE_FILE + '.stamp';
  try {
    if ((await readFile(stampFile, 'utf8')) === stamp) {
      await readFile(BUNDLE_FILE);
      return BUNDLE_FILE;
    }
  } catch { /* build it */ }

  const { loadPyodide } = await import(join(pyodideDir, 'pyodide.mjs'));
  const py = await loadPyodide({ indexURL: pyodideDir + '/', stdout: () => {}, stderr: (s) => console.error(s) });
  py.FS.mkdirTree('/build/wheels');
  for (const w of wheels) py.FS.writeFile('/build/wheels/' + w.split('/').pop(), await readFile(w));
  const summary = py.runPython(`
import compileall, os, shutil, sys, warnings, zipfile
warnings.simplefilter('ignore', SyntaxWarning)  # sympy's old test runner; harmless
site = '/build/site'
os.makedirs(site, exist_ok=True)
for name in sorted(os.listdir('/build/wheels')):
    with zipfile.ZipFile('/build/wheels/' + name) as z:
        z.extractall(site)
# Test suites are never imported by code that uses sympy; they are half of sympy's size.
for root, dirs, files in os.walk(site, topdown=True):
    for d in list(dirs):
        if d == 'tests':
            shutil.rmtree(os.path.join(root, d))
            dirs.remove(d)
ok = compileall.compile_dir(site, quiet=1, legacy=True, optimize=0, workers=1)
if not ok:
    raise SystemExit('compileall failed')
count = 0
for root, dirs, files in os.walk(site):
    for f in files:
        if f.endswith('.py'):
            os.remove(os.path.join(root, f))
            count += 1
# A deterministic zip (fixed timestamps, sorted entries).
out = '/build/genprm-python.zip'
entries = []
for root, dirs, files in os.walk(site):
    for f in files:
        full = os.path.join(root, f)
        entries.append((os.path.relpath(full, site), full))
entries.sort()
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for rel, full in entries:
        info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(full, 'rb') as fh:
            z.writestr(info, fh.read())
sys.path.insert(0, site)
import sympy
f"{count} modules, sympy {sympy.__version__}, python {sys.version.split()[0]}"
`);
  const zip = py.FS.readFile('/build/genprm-python.zip');
  await mkdir(BUNDLE_DIR, { recursive: true });
  await writeFile(BUNDLE_FILE + '.part', zip);
  await rename(BUNDLE_FILE + '.part', BUNDLE_FILE);
  await writeFile(stampFile, stamp);
  const digest = createHash('sha256').update(zip).digest('hex').slice(0, 12);
  console.log(`python bundle: ${summary}; ${(zip.length / 1e6).toFixed(1)} MB (sha256 ${digest}…)`);
  return BUNDLE_FILE;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  buildPythonBundle().catch((e) => { console.error(`build-python-bundle: ${e.stack || e}`); process.exit(1); });
}
