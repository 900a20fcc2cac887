// scripts/bench-host's driver: what the host spends per decode step of the browser build, on
// Dawn's null backend (no GPU time at all), over a matrix of configurations, each in its own
// process (scripts/lib/bench-host-case.mjs). Prints a Markdown table, or JSON lines with --json.
//
//   node scripts/lib/bench-host.mjs [--quick] [--json] [--shape S] [--quant q4,q8] [--batch 1,8]
//        [--f16 on,off] [--new-tokens N] [--prompt-tokens N] [--wasm DIR]
// --quick: one small configuration (qwen2-small, q4, batch 1, 3 decode steps) to check that the
// benchmark runs and reports every field; the numbers mean little.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, loadavg } from 'node:os';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const value = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
};
const quick = flag('--quick');
const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const shape = value('--shape', quick ? 'qwen2-small' : 'qwen2-1.5b-narrow');
const quants = list(value('--quant', quick ? 'q4' : 'q4,q8'));
const batches = list(value('--batch', quick ? '1' : '1,8')).map(Number);
const f16s = list(value('--f16', quick ? 'on' : 'on,off')).map((s) => s === 'on');
const newTokens = Number(value('--new-tokens', quick ? '3' : '24'));
const promptTokens = Number(value('--prompt-tokens', quick ? '4' : '16'));
const wasmDir = resolve(value('--wasm', process.env.GENPRM_WASM_DIR ?? join(REPO, 'pkg', 'wasm')));
if (!existsSync(join(wasmDir, 'genprm_bg.wasm'))) {
  console.error(`${wasmDir}/genprm_bg.wasm is missing: build it with scripts/build-wasm`);
  process.exit(2);
}

const rows = [];
let failed = 0;
for (const quant of quants) {
  for (const gpuF16 of f16s) {
    for (const batch of batches) {
      const spec = { shape, quant, batch, gpuF16, newTokens, promptTokens, wasmDir };
      const p = spawnSync(process.execPath, [join(here, 'bench-host-case.mjs'), JSON.stringify(spec)], { encoding: 'utf8', timeout: 1_200_000 });
      const line = (p.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
      const r = line ? JSON.parse(line.slice(7)) : { ok: false, error: `exit ${p.status}: ${`${p.stdout}${p.stderr}`.split('\n').filter(Boolean).slice(-5).join(' | ')}` };
      if (!r.ok) failed++;
      rows.push({ ...spec, ...r, wasmDir: undefined });
      if (flag('--json')) console.log(JSON.stringify({ ...r, wasmDir: undefined, shape, quant, batch, requested_f16: gpuF16 }));
      else if (!r.ok) console.error(`${shape} ${quant} f16 ${gpuF16 ? 'on' : 'off'} batch ${batch}: ${r.error}`);
    }
  }
}

if (!flag('--json')) {
  const f = (x, d = 1) => (x === undefined || x === null ? '–' : Number(x).toFixed(d));
  const kb = (x) => (x === undefined ? '–' : (x / 1024).toFixed(1));
  console.log(`Host cost per decode step on Dawn's null backend (${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.versions.node})`);
  console.log(`shape ${shape}, prompt ${promptTokens} tokens, ${newTokens} decode steps (the first not counted), browser build ${wasmDir}, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at the end\n`);
  console.log('| weights | f16 mode | batch | host ms / step | host ms / token | launches | bind groups | buffers created | bytes written | bytes read back | submits |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    if (!r.ok) {
      console.log(`| ${r.quant} | ${r.gpuF16 ? 'on' : 'off'} | ${r.batch} | failed: ${r.error} |||||||| `);
      continue;
    }
    console.log(`| ${r.quant} | ${r.gpu_f16 ? 'on' : 'off'} | ${r.batch} | ${f(r.host_ms_per_step, 2)} | ${f(r.host_ms_per_token, 2)} | ${f(r.launches_per_step, 0)} | ` +
      `${f(r.bind_groups_per_step, 0)} | ${f(r.buffers_per_step, 0)} | ${kb(r.bytes_written_per_step)} KiB | ${kb(r.bytes_read_per_step)} KiB | ${f(r.submits_per_step, 1)} |`);
  }
}
process.exit(failed ? 1 : 0);
