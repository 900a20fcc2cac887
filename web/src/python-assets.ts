// Where the app serves Pyodide and the sympy bundle (public/generated/, see scripts/copy-assets.mjs).
// Resolved from this module's URL (/src/ in development, /assets/ once built: both one level
// below the app's root), so any page of the app finds them, whatever path the app is served under.
export function pythonAssetURLs(): { indexURL: string; bundleURL: string } {
  return {
    indexURL: new URL(/* @vite-ignore */ '../generated/pyodide/', import.meta.url).href,
    bundleURL: new URL(/* @vite-ignore */ '../generated/python/genprm-python.zip', import.meta.url).href,
  };
}
