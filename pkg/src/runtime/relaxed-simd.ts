// The question both the wasm loader (./wasm.ts) and the demo's service worker (written into it by
// web/vite.config.ts) ask to pick one of the module's two builds (scripts/build-wasm).

/** A module holding one relaxed-SIMD instruction (`i8x16.relaxed_swizzle`): it validates exactly
 *  where the engine has WebAssembly relaxed SIMD (Chrome and Edge 114+). */
export const RELAXED_SIMD_PROBE: readonly number[] = [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11];
