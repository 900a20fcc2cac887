#!/usr/bin/env node
// f16 mode of the browser build under Dawn, Chrome's WebGPU implementation: headless Chromium
// here has only SwiftShader, which lacks `shader-f16`, so the browser tests cannot reach the f16
// shaders. Dawn's Node binding (npm `webgpu`) with its null backend offers `shader-f16` and runs
// Tint, Chrome's WGSL compiler, on every shader genprm's wasm module creates (results are not
// computed; native lavapipe tests check the numbers). Each case runs in its own process.
// Prints `dawn tests: P passed, F failed, S skipped`; exit status 1 when a case fails.
//   node tests/dawn/run.mjs [--require-all]   (after scripts/build-wasm and npm ci --prefix web)
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { wasmNames } from './wasm-names.mjs';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
let passed = 0, failed = 0, skipped = 0;
const summary = () => console.log(`dawn tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);

// Why the cases cannot run, and whether that fails the run under --require-all (a missing build
// does; a Dawn binary that does not load on this platform is a skip, as the kernel tests' tools).
function dawnMissing() {
  if (!existsSync(join(REPO, 'pkg', 'wasm', 'genprm_bg.wasm'))) return { why: 'pkg/wasm is missing (scripts/build-wasm)', fatal: true };
  try {
    const require = createRequire(join(REPO, 'web', 'package.json'));
    const { create } = require('webgpu');
    create(['backend=null']);
  } catch (e) {
    return { why: `Dawn's Node binding (npm webgpu) does not load here: ${String(e?.message ?? e).split('\n')[0]}`, fatal: false };
  }
  return null;
}

function run(spec) {
  const p = spawnSync(process.execPath, [join(here, 'case.mjs'), JSON.stringify(spec)], { encoding: 'utf8', timeout: 600_000 });
  const line = (p.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
  const output = `${p.stdout ?? ''}${p.stderr ?? ''}`;
  return { result: line ? JSON.parse(line.slice(7)) : null, status: p.status, output };
}

const cases = [
  {
    name: 'q8 prefill and decode in f16 mode (default where the adapter has shader-f16): every shader valid',
    spec: { kind: 'bench', quant: 'q8' },
    check: ({ result }) => result?.ok && result.shaderF16 === true && result.gpu_f16 === true,
  },
  {
    name: 'q4 prefill and decode of a batch of 3 in f16 mode: every shader valid',
    spec: { kind: 'bench', quant: 'q4', batch: 3 },
    check: ({ result }) => result?.ok && result.gpu_f16 === true,
  },
  {
    name: 'Model.load of tiny-genprm (q4) reports f16 mode and an f16 KV cache; gpuF16: false turns both off',
    spec: { kind: 'load', quant: 'q4' },
    check: ({ result }) => result?.ok && result.info.gpuF16 === true && result.info.kvF16 === true,
    then: { spec: { kind: 'load', quant: 'q4', gpuF16: false }, check: ({ result }) => result?.ok && result.info.gpuF16 === false && result.info.kvF16 === false },
  },
  {
    name: 'control: a device without shader-f16 rejects the f16 shaders (so a Tint error would fail the cases above)',
    spec: { kind: 'bench', quant: 'q8', stripF16: true },
    check: ({ result, status, output }) => !result?.ok && (status !== 0 || result) && /ShaderModule|f16/.test(output),
  },
  {
    // Its fields, not its timings (scripts/bench-host --quick: the small shape, three steps).
    name: 'scripts/bench-host reports host time and WebGPU counts per decode step',
    exec: () => {
      const p = spawnSync(process.execPath, [join(REPO, 'scripts', 'lib', 'bench-host.mjs'), '--quick', '--json'], { encoding: 'utf8', timeout: 600_000 });
      const line = (p.stdout ?? '').split('\n').find((l) => l.startsWith('{'));
      return { result: line ? JSON.parse(line) : null, status: p.status, output: `${p.stdout ?? ''}${p.stderr ?? ''}` };
    },
    check: ({ result: r, status }) => {
      if (status !== 0 || !r?.ok) return false;
      const counts = ['launches', 'bind_groups', 'buffers', 'buffer_bytes', 'encoders', 'passes', 'submits', 'pipelines', 'writes', 'bytes_written',
        'copies', 'bytes_copied', 'read_backs', 'bytes_read'].map((k) => `${k}_per_step`);
      const numbers = ['host_ms_per_step', 'host_ms_per_token', 'wall_ms_per_step', 'first_step_host_ms', ...counts];
      return numbers.every((k) => Number.isFinite(r[k]) && r[k] >= 0) && r.shape === 'qwen2-small' && r.quant === 'q4' && r.batch === 1 && r.steps === 2
        // Every step launches kernels and reads something back (the next tokens' logits).
        && r.launches_per_step > 0 && r.read_backs_per_step >= 1 && r.bytes_read_per_step > 0 && r.host_ms_per_step > 0
        // qwen2-small's 4 layers, 6 launches each (the RMSNorms applied by the products after
        // them, q/k/v and gate/up stacked, the epilogues in the products' launches), plus the
        // embedding lookup, the output head and the top-k's three: a launch more is a fusion lost.
        && r.launches_per_step === 6 * 4 + 5
        // Replayed steps create no bind groups but the top-k's.
        && r.bind_groups_per_step <= 3 && r.buffers_per_step === 0;
    },
  },
];

// The modules themselves (no Dawn needed): each calls its static constructors once, at start
// (crate/src/wasm/mod.rs), so wasm-ld links it as a library. A module that never calls them is linked
// as a "command": every export is wrapped to rerun them (`<export>.command_export` in the name
// section), which made each call from JavaScript rerun CubeCL's registrations.
function checkModules() {
  const names = ['genprm_bg.wasm', 'genprm_relaxed_bg.wasm'];
  const present = names.filter((n) => existsSync(join(REPO, 'pkg', 'wasm', n)));
  const name = 'no export of the browser modules is wrapped to rerun the static constructors (`command_export`)';
  if (!present.length) {
    console.log(`SKIP dawn › ${name}: pkg/wasm is missing (scripts/build-wasm)`);
    return skipped++;
  }
  const problems = [];
  let named = 0;
  for (const n of present) {
    const { hasNameSection, functions, exports } = wasmNames(readFileSync(join(REPO, 'pkg', 'wasm', n)));
    const wrapped = [...functions, ...exports].filter((f) => f.includes('command_export'));
    if (wrapped.length) problems.push(`${n}: ${wrapped.length} wrapped (${wrapped.slice(0, 4).join(', ')}…)`);
    if (exports.includes('__wasm_call_ctors')) problems.push(`${n} exports __wasm_call_ctors`);
    if (hasNameSection) {
      named++;
      if (!functions.includes('__wasm_call_ctors') && !functions.some((f) => f.includes('wasm_call_ctors'))) {
        problems.push(`${n}: no __wasm_call_ctors in its name section (is the explicit call still there?)`);
      }
    }
  }
  if (!named) {
    // The release build drops the name section (wasm-bindgen, wasm-opt): read the names in the
    // module wasm-ld linked, which scripts/build-wasm left in the target directory (the last
    // variant it built; both are linked alike).
    const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'genprm', 'target');
    const raw = ['wasm-release', 'debug'].map((p) => join(target, 'wasm32-unknown-unknown', p, 'genprm.wasm')).filter((f) => existsSync(f))
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
    const linked = raw ? wasmNames(readFileSync(raw)) : null;
    if (!linked?.hasNameSection) {
      console.log(`SKIP dawn › ${name}: the modules have no name section, nor has the linked module (${raw ?? 'not in the target directory'})`);
      return skipped++;
    }
    const wrapped = [...linked.functions, ...linked.exports].filter((f) => f.includes('command_export'));
    if (wrapped.length) problems.push(`${raw}: ${wrapped.length} wrapped (${wrapped.slice(0, 4).join(', ')}…)`);
    if (!linked.functions.some((f) => f.includes('wasm_call_ctors'))) problems.push(`${raw}: no __wasm_call_ctors in its name section (is the explicit call still there?)`);
  }
  if (problems.length) {
    failed++;
    console.log(`FAIL dawn › ${name}\n${problems.join('\n')}`);
  } else {
    passed++;
    console.log(`ok   dawn › ${name} (${present.join(', ')})`);
  }
}
checkModules();

const missing = dawnMissing();
if (missing) {
  console.log(`SKIP dawn: ${missing.why}`);
  skipped += cases.length;
  summary();
  process.exit(failed || (missing.fatal && process.argv.includes('--require-all')) ? 1 : 0);
}
for (const c of cases) {
  const t0 = Date.now();
  let ok = true, last;
  for (const step of [c, c.then].filter(Boolean)) {
    last = step.exec ? step.exec() : run(step.spec);
    if (!step.check(last)) { ok = false; break; }
  }
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (ok) {
    passed++;
    console.log(`ok   dawn › ${c.name} (${secs} s)`);
  } else {
    failed++;
    console.log(`FAIL dawn › ${c.name} (${secs} s)\n${last.output.split('\n').filter((l) => !l.includes('XDG_RUNTIME_DIR')).slice(0, 40).join('\n')}`);
  }
}
summary();
process.exit(failed ? 1 : 0);
