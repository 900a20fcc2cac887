// The embedding example's own script (what a tutoring site might write): it logs the widgets'
// events and registers the app's service worker so the page works offline after a first visit.
import { offlineFooter } from '../lib/offline.ts';

const log = document.getElementById('log')!;
function add(text: string): void {
  const line = document.createElement('div');
  line.textContent = text;
  line.dataset.testid = 'event';
  log.append(line);
  log.scrollTop = log.scrollHeight;
}

for (const type of ['reward', 'step', 'done', 'error']) {
  document.addEventListener(`genprm-${type}`, (ev) => {
    const target = ev.target as HTMLElement;
    if (target.localName !== 'genprm-verifier') return;
    const d = (ev as CustomEvent).detail;
    const what = type === 'reward' ? `step ${d.step + 1}, sample ${d.sample + 1}: ${d.reward.judgement ?? 'no judgement'} (${d.reward.value.toFixed(3)})`
      : type === 'step' ? `step ${d.index + 1}: reward ${d.reward.toFixed(3)}, ${d.correct === null ? 'no verdict' : d.correct ? 'looks right' : 'looks wrong'}`
        : type === 'done' ? (d.first_error_step >= 0 ? `first wrong step: ${d.first_error_step + 1}` : 'no wrong step')
          : `${d.stage}: ${d.message}`;
    add(`#${target.id} ${type} — ${what}`);
  });
}

document.querySelector('footer')?.append(offlineFooter());
