// The app serves the package's assets (Pyodide, the sympy bundle, the demo model) from
// generated/ (scripts/copy-assets.mjs) at the site's root: two levels above this module in
// development (/src/lib/) and one once built (/assets/). Every page imports this first.
import { configure } from 'genprm';

const generated = import.meta.env.DEV ? '../../generated/' : '../generated/';
configure({ assetsURL: new URL(/* @vite-ignore */ generated, import.meta.url) });
