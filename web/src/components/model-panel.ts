// Choosing and loading a model: a Hugging Face repo or URL (downloads kept in the Cache API),
// files or a folder from disk, or the tiny demo model; WebGPU checks; download and weight-loading
// progress; the cache's size and a control to clear it.
import {
  baseURLFor, cacheAvailable, cacheUsage, clearCache, DEFAULT_REPO, demoModelBase, demoModelURLs, filesSource, gpuInfo, loadModel, persistStorage, startEngine, urlSource,
  type DownloadProgress, type GenPRM, type GpuInfo, type LoadModelOptions, type LoadProgress, type ModelInfo, type ModelLoadProgress, type ModelSource,
} from 'genprm';
import type { Alerts } from './alerts.ts';
import { bytes, errorMessage, h, uid } from '../lib/dom.ts';
import { ProgressBar } from './progress.ts';

type SourceKind = 'url' | 'files' | 'folder' | 'demo';

export class ModelPanel {
  readonly el: HTMLElement;
  model: GenPRM | null = null;
  info: ModelInfo | null = null;
  gpu: GpuInfo | null = null;
  /** Called when a model is loaded (or unloaded: null). */
  onModel: (m: GenPRM | null) => void = () => {};

  private kind: SourceKind = 'url';
  private repo = h('input', { type: 'text', value: DEFAULT_REPO, spellcheck: false, autocomplete: 'off', 'data-testid': 'model-url' });
  private files = h('input', { type: 'file', multiple: true, 'data-testid': 'model-files' });
  private folder = h('input', { type: 'file', 'data-testid': 'model-folder' });
  private quant = h('select', { 'data-testid': 'quant' },
    h('option', { value: 'q4', text: '4-bit (q4, recommended)' }),
    h('option', { value: 'q8', text: '8-bit (q8)' }),
    h('option', { value: '', text: 'As stored, in f32 (largest)' }));
  private device = h('select', { 'data-testid': 'device' },
    h('option', { value: 'gpu', text: 'WebGPU (GPU)' }),
    h('option', { value: 'cpu', text: 'CPU (WebAssembly, slow)' }));
  private kv = h('select', { 'data-testid': 'kv-cache' },
    h('option', { value: '', text: 'Automatic (f16 in WebGPU f16 mode)' }),
    h('option', { value: 'f16', text: 'f16 (half the memory)' }),
    h('option', { value: 'f32', text: 'f32' }));
  private loadButton = h('button', { type: 'button', class: 'primary', text: 'Load model', 'data-testid': 'load-model' });
  private cancelButton = h('button', { type: 'button', text: 'Cancel', hidden: true, 'data-testid': 'cancel-load' });
  private downloadBar = new ProgressBar('Download', 'download-progress');
  private weightsBar = new ProgressBar('Weights', 'weights-progress');
  private infoLine = h('p', { class: 'model-info', role: 'status', 'aria-live': 'polite', 'data-testid': 'model-info' });
  private cacheLine = h('span', { 'data-testid': 'cache-size' });
  private clearButton = h('button', { type: 'button', class: 'small', text: 'Clear cached models', 'data-testid': 'clear-cache' });
  private abort: AbortController | null = null;
  private downloadSummary: () => string = () => '';
  private sourceRows: Record<SourceKind, HTMLElement>;

  constructor(private alerts: Alerts) {
    this.folder.setAttribute('webkitdirectory', '');
    const radios = ([
      ['url', 'Hugging Face or URL'],
      ['files', 'Files from disk'],
      ['folder', 'A folder from disk'],
      ['demo', 'Tiny demo model (2 MB, for trying the app)'],
    ] as [SourceKind, string][]).map(([value, label]) => {
      const id = uid('src');
      const input = h('input', { type: 'radio', name: 'model-source', id, value, checked: value === this.kind, 'data-testid': `source-${value}` });
      input.addEventListener('change', () => { if (input.checked) this.setKind(value); });
      return h('div', { class: 'radio' }, input, h('label', { for: id, text: label }));
    });
    const row = (label: string, input: HTMLElement, hint?: string) => {
      input.id = uid('model');
      return h('div', { class: 'field' }, h('label', { for: input.id, text: label }), input, hint ? h('span', { class: 'hint', text: hint }) : null);
    };
    this.sourceRows = {
      url: row('Repo id or URL', this.repo, 'A Hugging Face repo id (owner/name, optionally @revision) or a base URL holding config.json, tokenizer.json and the safetensors. Downloads are kept in this browser for offline use.'),
      files: row('Model files', this.files, 'config.json, tokenizer.json, tokenizer_config.json and the *.safetensors (or a genprm pack).'),
      folder: row('Model folder', this.folder, 'The folder holding config.json, tokenizer.json and the weights.'),
      demo: h('p', { class: 'hint', text: 'A 4-layer model trained only to write GenPRM-style rationales for the three "Demo model" examples: it shows how the app works, not real judgements.' }),
    };
    this.loadButton.addEventListener('click', () => void this.load());
    this.cancelButton.addEventListener('click', () => this.abort?.abort());
    this.clearButton.addEventListener('click', () => void this.clear());
    this.el = h('section', { class: 'card', 'aria-labelledby': 'model-heading' },
      h('h2', { id: 'model-heading', text: 'Model' }),
      h('fieldset', { class: 'sources' }, h('legend', { text: 'Source' }), ...radios),
      ...Object.values(this.sourceRows),
      h('div', { class: 'grid' }, row('Weights in memory', this.quant), row('Device', this.device),
        row('KV cache', this.kv, 'Keys and values of the text so far: f16 halves their memory (Maj@8 over a long solution holds gigabytes in f32).')),
      h('div', { class: 'actions' }, this.loadButton, this.cancelButton),
      this.downloadBar.el, this.weightsBar.el, this.infoLine,
      h('p', { class: 'cache-line' }, this.cacheLine, ' ', this.clearButton));
    this.setKind(this.kind);
    void this.refreshCache();
  }

  /** Selects a source and fills its field (used by ?model= and the tests). */
  choose(kind: SourceKind, value?: string): void {
    const radio = this.el.querySelector<HTMLInputElement>(`input[name=model-source][value=${kind}]`);
    if (radio) radio.checked = true;
    this.setKind(kind);
    if (kind === 'url' && value !== undefined) this.repo.value = value;
  }

  private setKind(kind: SourceKind): void {
    this.kind = kind;
    for (const [k, el] of Object.entries(this.sourceRows)) el.hidden = k !== kind;
    this.quant.disabled = kind === 'demo';
  }

  private source(signal: AbortSignal): ModelSource {
    let current = '';
    const files = new Map<string, { bytes: number; cached: boolean }>();
    this.downloadSummary = () => {
      const all = [...files.values()];
      const total = all.reduce((a, f) => a + f.bytes, 0);
      const cached = all.filter((f) => f.cached).length;
      return `${all.length} file${all.length === 1 ? '' : 's'}, ${bytes(total)}${cached ? `, ${cached === all.length ? 'all' : cached} from this browser's cache` : ''}`;
    };
    const onProgress = (p: DownloadProgress) => {
      current = p.name;
      files.set(p.name, { bytes: p.loaded, cached: !!p.fromCache });
      const total = p.total;
      this.downloadBar.set(p.loaded, total, p.fromCache ? `${current}: ${bytes(p.loaded)} (from this browser's cache)` : `${current}: ${bytes(p.loaded)}${total ? ` of ${bytes(total)}` : ''}`);
    };
    switch (this.kind) {
      case 'url': {
        const base = baseURLFor(this.repo.value);
        return urlSource(`${this.repo.value.trim()}`, base, onProgress, { cache: true, signal });
      }
      case 'demo':
        return urlSource('the tiny demo model', demoModelBase(), onProgress, { cache: false, signal, urls: demoModelURLs() });
      case 'files':
      case 'folder': {
        const list = [...((this.kind === 'files' ? this.files : this.folder).files ?? [])];
        if (list.length === 0) throw new Error(this.kind === 'files' ? 'pick the model files first' : 'pick the model folder first');
        return filesSource(list);
      }
    }
  }

  async load(): Promise<void> {
    this.alerts.clear();
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.loadButton.disabled = true;
    this.cancelButton.hidden = false;
    this.downloadBar.hide();
    this.weightsBar.hide();
    try {
      const source = this.source(abort.signal);
      this.infoLine.textContent = `Loading ${source.label}…`;
      // The package's loader does these too; here they fail with what the page tells the user.
      await startEngine().catch((e) => { throw new StageError('The app could not start its WebAssembly module', errorMessage(e)); });
      const device = this.device.value as 'gpu' | 'cpu';
      if (device === 'gpu') {
        try {
          this.gpu = await gpuInfo();
        } catch (e) {
          throw new StageError('WebGPU is not available', errorMessage(e),
            'Use a browser with WebGPU (Chrome or Edge 113+, Safari 26+, Firefox 141+ on Windows) on a machine with a GPU, or choose Device: CPU (much slower).');
        }
      }
      if (this.kind === 'url') void persistStorage();
      // The model it replaces goes first: two would hold the GPU's memory at once.
      if (this.model) { this.model.free(); this.model = null; this.info = null; this.onModel(null); }
      const model = await loadModel(source, {
        device,
        quant: this.kind === 'demo' ? null : (this.quant.value || null) as LoadModelOptions['quant'],
        ...(this.kv.value ? { kvF16: this.kv.value === 'f16' } : {}),
        signal: abort.signal,
        onProgress: (p) => this.loadProgress(p),
      });
      this.model = model;
      this.info = model.info;
      const i = this.info!;
      this.weightsBar.done('loaded');
      if (this.downloadBar.el.hidden === false) this.downloadBar.done(this.downloadSummary());
      this.infoLine.textContent = `Loaded ${source.label}: ${i.modelType}, ${i.layers} layers, hidden ${i.hidden}, ${formatParams(i.parameters)} parameters, ${i.quant ?? 'f32'} weights on ${i.device === 'cpu' ? `the CPU${i.quant ? ` (WebAssembly ${i.cpuKernel === 'RelaxedSimd' ? 'relaxed SIMD' : 'SIMD128'})` : ''}` : `WebGPU${this.gpu ? ` (${this.gpu.backend})` : ''}`}${i.gpuF16 ? ', in f16 mode (shader-f16: prompt products in f16)' : ''}, KV cache in ${i.kvF16 ? 'f16' : 'f32'}.`;
      this.infoLine.dataset.loaded = 'true';
      this.onModel(model);
    } catch (e) {
      this.infoLine.dataset.loaded = 'false';
      if ((e as Error)?.name === 'AbortError' || abort.signal.aborted) {
        this.infoLine.textContent = 'Loading cancelled.';
        this.downloadBar.hide();
        this.weightsBar.hide();
      } else {
        this.infoLine.textContent = 'No model loaded.';
        this.downloadBar.el.hidden || this.downloadBar.fail('failed');
        this.weightsBar.el.hidden || this.weightsBar.fail('failed');
        this.reportLoadError(e);
      }
    } finally {
      if (this.abort === abort) this.abort = null;
      this.loadButton.disabled = false;
      this.cancelButton.hidden = true;
      void this.refreshCache();
    }
  }

  /** The weights bar (the sources report downloads to the download bar themselves). */
  private loadProgress(p: ModelLoadProgress): void {
    if (p.phase !== 'load') return;
    const names: Record<LoadProgress['stage'], string> = {
      config: 'reading config.json', tokenizer: 'reading the tokenizer', headers: 'reading safetensors headers',
      weights: 'loading weights', checksum: 'checking the pack', ready: 'ready',
    };
    if (p.stage === 'weights') this.weightsBar.set(p.done, p.total, `${p.done} of ${p.total} tensors${p.tensor ? ` (${p.tensor})` : ''}`);
    else if (p.stage === 'checksum') this.weightsBar.set(p.done, p.total, `checking ${p.tensor ?? 'shards'}`);
    else if (p.stage === 'ready') this.weightsBar.done('ready');
    else this.weightsBar.set(0, undefined, names[p.stage]);
  }

  private reportLoadError(e: unknown): void {
    if (e instanceof StageError) { this.alerts.error(e.title, e.message, e.hint); return; }
    // The loader's message says which URL 404'd when it complains about a file it did not get.
    const detail = errorMessage(e);
    if ((e as Error)?.name === 'GpuKernelError' && this.device.value === 'gpu') {
      // This adapter computes one of the model's kernels wrongly: offer the CPU instead.
      this.device.value = 'cpu';
      this.alerts.error('This GPU gave wrong results in a start-up check', detail,
        'The device is now set to CPU: press Load again to verify on the CPU (slower, but correct).');
      return;
    }
    const hint = /config\.json/.test(detail) && this.kind === 'url'
      ? 'Check the repo id or URL: it must hold a Hugging Face Qwen2 checkpoint (config.json, tokenizer.json, *.safetensors).'
      : /truncated|expected|shorter|end of file|ended early/i.test(detail)
        ? 'The file is incomplete: download it again (Clear cached models first) or pick a complete copy.'
        : undefined;
    this.alerts.error('The model could not be loaded', detail, hint);
  }

  /** Counts cache reads so that only the newest one writes the cache line: a read that began
   *  before "Clear cached models" (after a load, say) may finish after the clear's own read. */
  private cacheReads = 0;

  private async refreshCache(): Promise<void> {
    const read = ++this.cacheReads;
    if (!cacheAvailable()) {
      this.cacheLine.textContent = 'This browser gives the page no Cache API (private mode or not HTTPS): downloads are not kept.';
      this.clearButton.hidden = true;
      return;
    }
    try {
      const u = await cacheUsage();
      if (read !== this.cacheReads) return;
      this.cacheLine.textContent = u.files === 0 ? 'No models cached in this browser.' : `Cached model files: ${u.files}, ${bytes(u.bytes)}.`;
      this.clearButton.disabled = u.files === 0;
    } catch (e) {
      if (read !== this.cacheReads) return;
      this.cacheLine.textContent = `Could not read the cache: ${errorMessage(e)}`;
    }
  }

  private async clear(): Promise<void> {
    this.clearButton.disabled = true;
    try {
      await clearCache();
    } catch (e) {
      this.alerts.error('The cached models could not be cleared', errorMessage(e));
    }
    await this.refreshCache();
  }
}

class StageError extends Error {
  constructor(readonly title: string, message: string, readonly hint?: string) { super(message); }
}

function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} K`;
  return String(n);
}
