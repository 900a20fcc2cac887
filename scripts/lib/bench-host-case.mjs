// One configuration of scripts/bench-host, in its own process: the browser build (pkg/wasm) on
// Dawn's null backend (npm `webgpu`, as tests/dawn/case.mjs), which validates every WebGPU call
// and executes nothing, so whatever a decode step costs here is host time: the wasm module,
// wgpu's WebGPU glue, CubeCL and Dawn's validation. The GPU objects' prototypes are wrapped in
// counters before the module sees them; `benchRandom`'s progress stages and the logits read-backs
// (one `mapAsync` per decode step) mark the steady-state decode steps, whose CPU time
// (process.cpuUsage) and counts are reported per step. Prints one line: RESULT {json}, as
// soon as decode ends (the bandwidth probe after it is not run).
//
//   node scripts/lib/bench-host-case.mjs '{"shape": "qwen2-1.5b-narrow", "quant": "q4", "batch": 1, "gpuF16": true}'
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const spec = JSON.parse(process.argv[2] ?? '{}');
const wasmDir = spec.wasmDir ?? join(REPO, 'pkg', 'wasm');
const print = (o) => console.log(`RESULT ${JSON.stringify(o)}`);

const require = createRequire(join(REPO, 'web', 'package.json'));
const { create, globals } = require('webgpu');
Object.assign(globalThis, globals);
const gpu = create(['backend=null']);

// The counters. Prototypes come from live objects of a throwaway device (every device's objects
// share them), so the wrappers see every call the module makes.
const count = { launches: 0, bindGroups: 0, buffers: 0, bufferBytes: 0, encoders: 0, passes: 0, submits: 0, pipelines: 0, shaderModules: 0,
  writes: 0, bytesWritten: 0, copies: 0, bytesCopied: 0, readBacks: 0, bytesRead: 0 };
{
  const adapter = await gpu.requestAdapter();
  const device = await adapter.requestDevice();
  const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  const protos = { device: Object.getPrototypeOf(device), queue: Object.getPrototypeOf(device.queue), encoder: Object.getPrototypeOf(encoder),
    pass: Object.getPrototypeOf(pass), buffer: Object.getPrototypeOf(buffer) };
  pass.end();
  buffer.destroy();
  device.destroy();
  // spec.count === false leaves every method but mapAsync (the step marker) unwrapped: the
  // wrappers' own cost, measured against it, is small.
  const wrap = (proto, name, tally) => {
    const original = proto[name];
    if (typeof original !== 'function') throw new Error(`the WebGPU binding has no ${name}`);
    if (spec.count === false && name !== 'mapAsync') return;
    proto[name] = function (...args) {
      tally.apply(this, args);
      return original.apply(this, args);
    };
  };
  const bytesOf = (data, dataOffset = 0, size) => {
    const unit = data?.BYTES_PER_ELEMENT ?? 1;
    return size !== undefined ? size * unit : (data?.byteLength ?? 0) - dataOffset * unit;
  };
  wrap(protos.pass, 'dispatchWorkgroups', () => count.launches++);
  wrap(protos.pass, 'dispatchWorkgroupsIndirect', () => count.launches++);
  wrap(protos.device, 'createBindGroup', () => count.bindGroups++);
  wrap(protos.device, 'createBuffer', (d) => { count.buffers++; count.bufferBytes += d?.size ?? 0; });
  wrap(protos.device, 'createCommandEncoder', () => count.encoders++);
  wrap(protos.device, 'createComputePipeline', () => count.pipelines++);
  wrap(protos.device, 'createComputePipelineAsync', () => count.pipelines++);
  wrap(protos.device, 'createShaderModule', () => count.shaderModules++);
  wrap(protos.encoder, 'beginComputePass', () => count.passes++);
  wrap(protos.encoder, 'copyBufferToBuffer', (...a) => { count.copies++; count.bytesCopied += (a.length >= 5 ? a[4] : a[2]) ?? 0; });
  wrap(protos.queue, 'submit', () => count.submits++);
  wrap(protos.queue, 'writeBuffer', (_b, _o, data, dataOffset, size) => { count.writes++; count.bytesWritten += bytesOf(data, dataOffset, size); });
  wrap(protos.buffer, 'mapAsync', function (mode, offset = 0, size) {
    if (!(mode & GPUMapMode.READ)) return;
    count.readBacks++;
    count.bytesRead += size ?? this.size - offset;
    onReadBack();
  });
}

// Snapshots at each read-back of the decode phase.
let phase = 'setup';
const marks = [];
const snapshot = () => ({ t: performance.now(), cpu: process.cpuUsage(), count: { ...count } });
// GENPRM_BENCH_HOST_PROFILE=FILE writes a CPU profile of the same steady-state steps (the
// inspector's, as `node --cpu-prof` but without the load and prefill).
const profileFile = process.env.GENPRM_BENCH_HOST_PROFILE;
const session = profileFile ? new (await import('node:inspector')).Session() : null;
if (session) {
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 200 });
}
function onReadBack() {
  if (phase !== 'decode') return;
  marks.push(snapshot());
  if (session && marks.length === 1) session.post('Profiler.start');
}
// (An in-process inspector session answers synchronously.)
const saveProfile = () => session?.post('Profiler.stop', (err, { profile } = {}) => {
  if (!err) writeFileSync(profileFile, JSON.stringify(profile));
});

// wgpu finds navigator.gpu through `Window` (it refuses globals without one).
globalThis.Window = function Window() {};
Object.defineProperty(globalThis, 'navigator', { value: { gpu, userAgent: 'node' }, configurable: true });

try {
  const wasm = await import(join(wasmDir, 'genprm.js'));
  await wasm.default({ module_or_path: readFileSync(join(wasmDir, 'genprm_bg.wasm')) });
  const info = await wasm.gpuInfo();
  const newTokens = spec.newTokens ?? 24;
  const options = { shape: spec.shape ?? 'qwen2-1.5b-narrow', device: 'gpu', quant: spec.quant ?? 'q4', batch: spec.batch ?? 1,
    promptTokens: spec.promptTokens ?? 16, newTokens, ...(spec.gpuF16 === undefined ? {} : { gpuF16: spec.gpuF16 }) };
  let decodeStart = null, loadStart = null, compileStart = null;
  // Everything is measured when the bandwidth probe begins (after the last decode step): report
  // then and end, without running the probe (meaningless here; its 128 MiB buffer can exceed the
  // null device's memory).
  const report = () => {
    // Steps 2..N: from the first step's read-back to the last one's (the first decode step may
    // still compile its kernels).
    if (newTokens < 2 || marks.length % newTokens !== 0 || marks.length === 0) {
      throw new Error(`expected a whole number of read-backs per decode step: ${marks.length} over ${newTokens} steps`);
    }
    const perStep = marks.length / newTokens;
    const [a, b] = [marks[perStep - 1], marks[marks.length - 1]];
    const steps = newTokens - 1;
    const cpuMs = (b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system) / 1000;
    const per = (k) => (b.count[k] - a.count[k]) / steps;
    return {
      ok: true,
      shape: options.shape, quant: options.quant, batch: options.batch,
      // The module refuses f16 mode where the device lacks shader-f16 (the load fails).
      gpu_f16: spec.gpuF16 ?? info.shaderF16,
      shader_f16: info.shaderF16, adapter: info.adapter, steps,
      host_ms_per_step: cpuMs / steps,
      host_ms_per_token: cpuMs / steps / options.batch,
      wall_ms_per_step: (b.t - a.t) / steps,
      first_step_host_ms: (a.cpu.user + a.cpu.system - decodeStart.cpu.user - decodeStart.cpu.system) / 1000,
      launches_per_step: per('launches'),
      bind_groups_per_step: per('bindGroups'),
      buffers_per_step: per('buffers'),
      buffer_bytes_per_step: per('bufferBytes'),
      encoders_per_step: per('encoders'),
      passes_per_step: per('passes'),
      submits_per_step: per('submits'),
      pipelines_per_step: per('pipelines') + per('shaderModules'),
      writes_per_step: per('writes'),
      bytes_written_per_step: per('bytesWritten'),
      copies_per_step: per('copies'),
      bytes_copied_per_step: per('bytesCopied'),
      read_backs_per_step: per('readBacks'),
      bytes_read_per_step: per('bytesRead'),
      load_s: (compileStart.t - loadStart.t) / 1000,
      device_bytes_created: b.count.bufferBytes,
    };
  };
  await wasm.benchRandom(options, ({ stage }) => {
    const now = snapshot();
    if (stage === 'load') loadStart = now;
    if (stage === 'compile') compileStart = now;
    if (stage === 'decode') decodeStart = now;
    phase = stage;
    if (stage === 'bandwidth') {
      let result;
      try {
        result = report();
      } catch (e) {
        result = { ok: false, error: String(e?.message ?? e) };
      }
      saveProfile();
      print(result);
      process.exit(0);
    }
  });
  print({ ok: false, error: 'benchRandom finished without reaching its bandwidth stage' });
} catch (e) {
  print({ ok: false, error: String(e?.message ?? e) });
}
process.exit(0);
