// The names a WebAssembly module's name section gives its functions (empty when the module has
// none, e.g. after wasm-opt), and its exports' names: enough to see what wasm-ld linked.
export function wasmNames(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (b.length < 8 || b[0] !== 0 || b[1] !== 0x61 || b[2] !== 0x73 || b[3] !== 0x6d) throw new Error('not a WebAssembly module');
  let p = 8;
  const u32 = () => {
    let result = 0, shift = 0, byte;
    do {
      byte = b[p++];
      result += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return result;
  };
  const name = () => {
    const n = u32();
    const s = new TextDecoder().decode(b.subarray(p, p + n));
    p += n;
    return s;
  };
  const functions = [], exports = [];
  let hasNameSection = false;
  while (p < b.length) {
    const id = b[p++];
    const size = u32();
    const end = p + size;
    if (id === 0 && name() === 'name') {
      hasNameSection = true;
      while (p < end) {
        const sub = b[p++];
        const subEnd = u32() + p;
        if (sub === 1) {
          for (let n = u32(); n > 0; n--) {
            u32();
            functions.push(name());
          }
        }
        p = subEnd;
      }
    } else if (id === 7) {
      for (let n = u32(); n > 0; n--) {
        exports.push(name());
        p++; // kind
        u32(); // index
      }
    }
    p = end;
  }
  return { hasNameSection, functions, exports };
}
