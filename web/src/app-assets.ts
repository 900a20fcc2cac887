// The app serves the package's assets (Pyodide, the sympy bundle, the demo model) from
// generated/ (scripts/copy-assets.mjs), one level above this module in development (/src/) and
// once built (/assets/). Every page imports this first.
import { configure } from 'genprm';

configure({ assetsURL: new URL(/* @vite-ignore */ '../generated/', import.meta.url) });
