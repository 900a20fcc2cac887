// Where a model's files come from: a Hugging Face repo or any base URL (downloaded into the
// Cache API), files or a folder picked from disk, or the tiny demo model the app ships.
// Each source gives the wasm loader its `fetchFile(name) => Promise<Blob | null>`.
import type { FetchFile } from '../contract/types.ts';
import { download, type DownloadProgress } from '../runtime/model-cache.ts';
export { demoModelBase, demoModelURLs } from '../runtime/assets.ts';

export const DEFAULT_REPO = 'GenPRM/GenPRM-1.5B';

export interface ModelSource {
  /** For people: "GenPRM/GenPRM-1.5B (Hugging Face)", "3 local files", ... */
  label: string;
  fetchFile: FetchFile;
  /** Files the source did not have (a 404, an HTML page instead, not picked), and why: the loader's errors get this context. */
  missing: Map<string, string>;
  /** What urlSource() and filesSource() were made from, so that the engine's worker can read the
   *  files itself (downloading into the same Cache API, or handed the picked Files) rather than
   *  through the page; a source without these is read through `fetchFile` on the page. */
  location?: { base: string; cache: boolean; signal?: AbortSignal; onProgress: (p: DownloadProgress) => void; files?: readonly string[]; urls?: Readonly<Record<string, string>>; revalidate?: boolean };
  files?: File[];
}

/** The loader's error with what the source knows (which URL answered 404) added. */
export function withContext(e: unknown, source: ModelSource): Error {
  let detail = e instanceof Error ? e.message : String(e);
  const context = [...source.missing.entries()].filter(([name]) => detail.includes(name)).map(([, why]) => why);
  if (context.length) detail += ` — ${context.join('; ')}`;
  const err = new Error(detail);
  // Names callers match on: a cancelled load, and a GPU kernel that failed its start-up check
  // (the page then offers the CPU device).
  if (e instanceof Error && (e.name === 'AbortError' || e.name === 'GpuKernelError')) err.name = e.name;
  if (e instanceof Error && 'kernel' in e) Object.assign(err, { kernel: (e as Error & { kernel: unknown }).kernel });
  return err;
}

/**
 * Turns what the user typed into a base URL ending in '/': an http(s) URL, a path on this site
 * (`/models/x/`, `./models/x`, `../x`: resolved against the page), or a Hugging Face repo id
 * (`owner/name`, optionally `@revision`).
 */
export function baseURLFor(input: string): string {
  const s = input.trim();
  if (!s) throw new Error('type a Hugging Face repo id (owner/name) or a URL');
  if (/^https?:\/\//i.test(s) || (/^\.{0,2}\//.test(s) && !s.startsWith('//'))) return folderURL(s);
  const m = /^(?:hf:|huggingface\.co\/)?([A-Za-z0-9][\w.-]*\/[\w.-]+?)(?:@([\w./-]+))?\/?$/.exec(s);
  if (!m) throw new Error(`"${s}" is neither a Hugging Face repo id (owner/name) nor an http(s) URL`);
  const revision = m[2] ?? 'main';
  return `https://huggingface.co/${m[1]}/resolve/${encodeURIComponent(revision)}/`;
}

/** The files under a base URL (a Hugging Face repo's `resolve/<revision>/`, any site; a path
 *  on this site, `/models/x/` or `./models/x`, is resolved against the page): each downloaded as
 *  the loader asks for it, with progress, and kept in the Cache API when `cache` is set; names
 *  that would leave the folder are refused. A kept file is checked against the server on each
 *  load (`revalidate`, one HEAD request per file; the default except for Hugging Face, whose
 *  files are kept as first downloaded), so a site that replaces its model is read anew. With
 *  `files` (the folder's file names, when known), a name not among them is absent without a
 *  request: the loader's probes for optional files then log no 404. With `urls` (each file's own
 *  URL, as a bundler placed the package's demo model), those are the folder's only files and
 *  each is fetched from its URL. */
export function urlSource(label: string, base: string, onProgress: (p: DownloadProgress) => void,
  options: { cache: boolean; signal?: AbortSignal; files?: readonly string[]; urls?: Readonly<Record<string, string>>; revalidate?: boolean }): ModelSource {
  base = folderURL(base);
  options = { ...options, revalidate: options.revalidate ?? !HUGGING_FACE_BASE.test(base) };
  const missing = new Map<string, string>();
  const urls = options.urls ? new Map(Object.entries(options.urls)) : null;
  const files = urls ? [...urls.keys()] : options.files;
  // The folder's file names: given, or (a Hugging Face repo) asked of its API once.
  let listing: Promise<Set<string> | null> | null = files ? Promise.resolve(new Set(files)) : null;
  return {
    label,
    missing,
    location: { base, cache: options.cache, signal: options.signal, onProgress, files, urls: options.urls, revalidate: options.revalidate },
    fetchFile: async (name, ask) => {
      const url = urls?.get(name) ?? new URL(name, base).href;
      // Names come from the model's own files (an index, a manifest): never leave its folder.
      if (!urls?.has(name) && !url.startsWith(base)) throw new Error(`${JSON.stringify(name)} is not a file in the model's folder ${base}`);
      listing ??= huggingFaceFiles(base, options);
      const listed = await listing;
      // An optional file in a folder with no list: not asked for, so no 404 is logged.
      if (!listed && ask?.ifListed) return null;
      if (listed && !listed.has(name)) {
        missing.set(name, `${name} is not one of ${label}'s files`);
        return null;
      }
      const got = await download(url, name, onProgress, options);
      if (got instanceof Blob) return got;
      missing.set(name, got.absent);
      return null;
    },
  };
}

/** A Hugging Face repo's file names at the revision of `base` (`https://huggingface.co/<owner>/<name>/
 *  resolve/<revision>/`), from its API (one small request, kept in the Cache API with the model
 *  when `cache` is set), so the loader's probes for optional files cost no request and log no
 *  404; `null` for any other base or when the listing cannot be had (offline, an API change):
 *  the loader then asks for each file and takes a 404 as absent, as before. */
async function huggingFaceFiles(base: string, options: { cache: boolean; signal?: AbortSignal }): Promise<Set<string> | null> {
  const m = HUGGING_FACE_BASE.exec(base);
  if (!m) return null;
  const url = `https://huggingface.co/api/models/${m[1]}/revision/${m[2]}`;
  try {
    const got = await download(url, '(the repository\'s file list)', () => {}, options);
    if (!(got instanceof Blob)) return null;
    const siblings = (JSON.parse(await got.text()) as { siblings?: { rfilename?: unknown }[] }).siblings;
    const names = (siblings ?? []).map((f) => f.rfilename).filter((n): n is string => typeof n === 'string');
    return names.length ? new Set(names) : null;
  } catch (e) {
    if ((e as Error)?.name === 'AbortError') throw e;
    return null;
  }
}

/** A Hugging Face repository's files at a revision: `https://huggingface.co/<owner>/<name>/resolve/<revision>/`. */
const HUGGING_FACE_BASE = /^https:\/\/huggingface\.co\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/$/;

/** `base` as an absolute URL ending in '/': a path on the site resolved against the page. */
function folderURL(base: string): string {
  let url: string;
  try {
    url = new URL(base).href;
  } catch {
    const here = (globalThis as { location?: { href: string } }).location?.href;
    if (!here || !/^\.{0,2}\//.test(base)) {
      throw new Error(`${JSON.stringify(base)} is not a URL${here ? ', nor a path on this site (/models/x/, ./models/x)' : ''}: give the model folder's full URL`);
    }
    url = new URL(base, here).href;
  }
  return url.endsWith('/') ? url : url + '/';
}

/** Files from an <input type=file multiple> or a folder (webkitdirectory). */
export function filesSource(files: File[]): ModelSource {
  const byName = new Map<string, File>();
  // A folder pick lists nested files too: the top level of the picked folder wins over subfolders.
  const depth = (f: File) => (f.webkitRelativePath || f.name).split('/').length;
  for (const f of [...files].sort((a, b) => depth(b) - depth(a))) byName.set(f.name, f);
  const missing = new Map<string, string>();
  const folder = files[0]?.webkitRelativePath?.split('/')[0];
  return {
    label: folder ? `folder ${folder}` : `${files.length} local file${files.length === 1 ? '' : 's'}`,
    missing,
    // One file per name, the folder's own first (a File's webkitRelativePath does not survive
    // postMessage, so the engine's worker gets the choice made here).
    files: [...byName.values()],
    fetchFile: async (name) => {
      const f = byName.get(name) ?? null;
      if (!f) missing.set(name, `${name} is not among the picked files`);
      return f;
    },
  };
}
