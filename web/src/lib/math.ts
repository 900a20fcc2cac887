// Renders text with TeX math ($…$, $$…$$, \(…\), \[…\]) into HTML with KaTeX; the rest is escaped
// text. A `$` only opens math when the next character is not a space and it closes before a
// non-digit, so "$5 and $6" stays text (pandoc's rule).
import katex from 'katex';
import 'katex/dist/katex.min.css';

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

interface Piece { math: boolean; display: boolean; text: string }

export function splitMath(src: string): Piece[] {
  const out: Piece[] = [];
  let text = '';
  let i = 0;
  const flush = () => { if (text) out.push({ math: false, display: false, text }); text = ''; };
  while (i < src.length) {
    const rest = src.slice(i);
    let m: { open: string; close: string; display: boolean } | null = null;
    if (rest.startsWith('$$')) m = { open: '$$', close: '$$', display: true };
    else if (rest.startsWith('\\[')) m = { open: '\\[', close: '\\]', display: true };
    else if (rest.startsWith('\\(')) m = { open: '\\(', close: '\\)', display: false };
    else if (rest[0] === '$' && src[i - 1] !== '\\' && rest[1] && !/\s/.test(rest[1])) m = { open: '$', close: '$', display: false };
    if (m) {
      let j = i + m.open.length;
      let end = -1;
      while (j < src.length) {
        const k = src.indexOf(m.close, j);
        if (k < 0) break;
        if (src[k - 1] === '\\' && m.close === '$') { j = k + 1; continue; }
        if (m.open === '$' && (/\s/.test(src[k - 1]) || /\d/.test(src[k + 1] ?? ''))) { j = k + 1; continue; }
        end = k;
        break;
      }
      if (end > i + m.open.length) {
        flush();
        out.push({ math: true, display: m.display, text: src.slice(i + m.open.length, end) });
        i = end + m.close.length;
        continue;
      }
    }
    text += src[i];
    i++;
  }
  flush();
  return out;
}

export function renderMathHTML(src: string): string {
  return splitMath(src).map((p) => {
    if (!p.math) return escapeHtml(p.text);
    try {
      return katex.renderToString(p.text, { displayMode: p.display, throwOnError: false, output: 'htmlAndMathml', strict: 'ignore' });
    } catch {
      return escapeHtml(p.text);
    }
  }).join('');
}

/** Fills `el` with the rendered text (math typeset, line breaks kept). */
export function renderMath(el: HTMLElement, src: string): void {
  el.innerHTML = renderMathHTML(src);
  el.classList.add('math-text');
}
