// One case of tests/dawn/run.mjs, in its own process (a WebGPU validation error panics the wasm
// module, which ends the process): the browser build of genprm (pkg/wasm) on Dawn, Chrome's
// WebGPU implementation, through its Node binding (npm `webgpu`) and its null backend, which
// executes nothing but validates every shader with Tint, Chrome's WGSL compiler, and offers
// `shader-f16`. Prints one JSON line: {ok, ...} or {ok: false, error}.
//
//   node tests/dawn/case.mjs '{"kind": "bench", "quant": "q8"}'
//   node tests/dawn/case.mjs '{"kind": "load", "quant": "q4", "gpuF16": false}'
//   node tests/dawn/case.mjs '{"kind": "bench", "quant": "q8", "stripF16": true}'
//     (the device is created without shader-f16 while the adapter lists it: f16 shaders must fail)
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const spec = JSON.parse(process.argv[2] ?? '{}');
const print = (o) => console.log(`RESULT ${JSON.stringify(o)}`);

const require = createRequire(join(REPO, 'web', 'package.json'));
const { create, globals } = require('webgpu');
Object.assign(globalThis, globals);
const gpu = create(['backend=null']);
if (spec.stripF16) {
  const requestAdapter = gpu.requestAdapter.bind(gpu);
  gpu.requestAdapter = async (options) => {
    const adapter = await requestAdapter(options);
    const requestDevice = adapter.requestDevice.bind(adapter);
    adapter.requestDevice = (d) => requestDevice({ ...d, requiredFeatures: [...(d?.requiredFeatures ?? [])].filter((f) => f !== 'shader-f16') });
    return adapter;
  };
}
// wgpu finds navigator.gpu through `Window` (it refuses globals without one).
globalThis.Window = function Window() {};
Object.defineProperty(globalThis, 'navigator', { value: { gpu, userAgent: 'node' }, configurable: true });

const wasm = await import(join(REPO, 'pkg', 'wasm', 'genprm.js'));
await wasm.default({ module_or_path: readFileSync(join(REPO, 'pkg', 'wasm', 'genprm_bg.wasm')) });
const info = await wasm.gpuInfo();
try {
  if (spec.kind === 'bench') {
    const r = await wasm.benchRandom({ shape: 'qwen2-small', device: 'gpu', quant: spec.quant, batch: spec.batch ?? 1, promptTokens: 20, newTokens: 3 }, () => {});
    print({ ok: true, shaderF16: info.shaderF16, gpu_f16: r.gpu_f16, gpu_matvec: r.gpu_matvec });
  } else if (spec.kind === 'load') {
    const dir = join(REPO, 'tests', 'fixtures', 'models', 'tiny-genprm');
    const files = new Set(readdirSync(dir));
    const fetchFile = async (name) => (files.has(name) ? new Blob([readFileSync(join(dir, name))]) : null);
    const options = { device: 'gpu', quant: spec.quant, ...(spec.gpuF16 === undefined ? {} : { gpuF16: spec.gpuF16 }) };
    const model = await wasm.Model.load(fetchFile, options, () => {});
    print({ ok: true, shaderF16: info.shaderF16, info: model.info() });
  } else {
    print({ ok: false, error: `unknown case ${JSON.stringify(spec)}` });
  }
} catch (e) {
  print({ ok: false, error: String(e?.message ?? e) });
}
process.exit(0);
