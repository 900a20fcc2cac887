// The browser benchmark: GenPRM-1.5B's shape (or a small Qwen2) with random weights built on
// this device, timed as `genprm bench --random-shape` does natively.
import type { BenchOptions, BenchProgress, BenchResult } from '../contract/types.ts';
import { wasm } from './wasm.ts';

export async function benchRandom(options: BenchOptions, onProgress: (p: BenchProgress) => void = () => {}): Promise<BenchResult> {
  const w = await wasm();
  if (!w.benchRandom) throw new Error('this build of the genprm wasm module has no benchRandom() (it predates it): rebuild it with scripts/build-wasm');
  if ((options.device ?? 'gpu') === 'gpu') await w.gpuInfo();
  return w.benchRandom(options, onProgress);
}
