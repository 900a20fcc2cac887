// The URL of each file the package ships beside its modules, by its path under dist/
// ('assets/pyodide/pyodide.asm.wasm', 'assets/models/tiny-genprm/config.json',
// 'wasm/genprm_bg.wasm'), or null where there are none.
//
// In the built package this module is generated (pkg/scripts/build.mjs writes
// dist/runtime/asset-urls.js): one `new URL('../<path>', import.meta.url)` per file, written out
// literally, which is the form bundlers look for (Vite, webpack 5, Rollup with its import-meta
// assets plugin, Parcel): each file is copied into the site's build under whatever name the
// bundler gives it, and the package asks for it there, so a bundled site configures nothing. With
// no bundler the same URLs resolve next to the modules. In the source tree (the demo, which
// imports pkg/src through its alias) there are no packaged files: the demo serves its assets
// itself and says where with configure({ assetsURL }).

/** Each packaged file's URL by its path under dist/, or null (see above). */
export const PACKAGED_FILES: Readonly<Record<string, URL>> | null = null;
