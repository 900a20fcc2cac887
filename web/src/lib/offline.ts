// Registers the app's service worker (dist/sw.js, see service-worker.js) so the pages work
// offline after the first load, and says so in the page; when a new version has been
// downloaded, offers to reload into it. Used by the demo, the grading page, the benchmark and
// the embedding example. Not in development (Vite's server): there is no sw.js there.

export interface OfflineStatus {
  /** 'unsupported' | 'installing' | 'ready' (cached for offline use) | 'failed' */
  state: 'unsupported' | 'installing' | 'ready' | 'failed';
  message: string;
}

export function registerOffline(onStatus: (s: OfflineStatus) => void = () => {}, onUpdate?: (apply: () => void) => void): void {
  if (import.meta.env.DEV) return;
  if (!('serviceWorker' in navigator)) {
    onStatus({ state: 'unsupported', message: 'This browser cannot keep the app for offline use (no service workers; private mode or not HTTPS).' });
    return;
  }
  const sw = navigator.serviceWorker;
  const hadController = !!sw.controller;
  onStatus({ state: 'installing', message: 'Saving the app for offline use…' });
  sw.register(new URL('sw.js', document.baseURI), { scope: './' }).then((reg) => {
    const offerUpdate = () => {
      if (!reg.waiting || !sw.controller) return;
      onUpdate?.(() => {
        sw.addEventListener('controllerchange', () => location.reload(), { once: true });
        reg.waiting?.postMessage('skip-waiting');
      });
    };
    offerUpdate();
    reg.addEventListener('updatefound', () => {
      reg.installing?.addEventListener('statechange', () => offerUpdate());
    });
  }, (e: unknown) => {
    onStatus({ state: 'failed', message: `The app could not be saved for offline use: ${e instanceof Error ? e.message : String(e)}` });
  });
  sw.ready.then(() => {
    onStatus({ state: 'ready', message: hadController ? 'Works offline (the app is saved in this browser).' : 'Saved for offline use: reloading without a network works now.' });
  });
}

/** A small footer line for the offline status and an "update ready" button. */
export function offlineFooter(): HTMLElement {
  const line = document.createElement('p');
  line.className = 'offline-status';
  line.dataset.testid = 'offline-status';
  line.setAttribute('aria-live', 'polite');
  const text = document.createElement('span');
  line.append(text);
  registerOffline((s) => {
    text.textContent = s.message;
    line.dataset.state = s.state;
  }, (apply) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small';
    b.textContent = 'A new version is ready: reload';
    b.addEventListener('click', apply);
    line.append(' ', b);
  });
  return line;
}
