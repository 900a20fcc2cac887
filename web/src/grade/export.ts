// Exports of a grading: CSV (one row per solution, one column per step's reward) for
// spreadsheets, JSON (the records exactly as `genprm grade` writes them, with the options and a
// summary), and JSON Lines (the CLI's output format). The summary of agreement with the
// reference labels uses ProcessBench's measures.
import type { GradeResult, ProtocolOptions } from 'genprm';

export interface Summary {
  rows: number;
  graded: number;
  bad_rows: number;
  failed: number;
  /** Graded solutions where GenPRM found a wrong step. */
  with_error: number;
  /** Graded rows that have a reference label. */
  labeled: number;
  /** Of those, where GenPRM's first wrong step equals the label. */
  agreed: number;
  /** agreed / labeled (null without labels). */
  agreement: number | null;
  /** Agreement on the solutions labelled wrong (label ≥ 0) and right (label −1), and their
   *  harmonic mean (ProcessBench's F1). */
  agreement_on_wrong: number | null;
  agreement_on_correct: number | null;
  f1: number | null;
}

export function summarize(records: GradeResult[], rows: number): Summary {
  const graded = records.filter((r) => r.status === 'graded');
  const labeled = graded.filter((r) => r.label !== null && r.agreement !== null);
  const rate = (rs: GradeResult[]) => (rs.length ? rs.filter((r) => r.agreement).length / rs.length : null);
  const wrong = rate(labeled.filter((r) => (r.label ?? -1) >= 0));
  const correct = rate(labeled.filter((r) => r.label === -1));
  return {
    rows,
    graded: graded.length,
    bad_rows: records.filter((r) => r.status === 'bad_row').length,
    failed: records.filter((r) => r.status === 'failed').length,
    with_error: graded.filter((r) => (r.first_error_step ?? -1) >= 0).length,
    labeled: labeled.length,
    agreed: labeled.filter((r) => r.agreement).length,
    agreement: rate(labeled),
    agreement_on_wrong: wrong,
    agreement_on_correct: correct,
    f1: wrong !== null && correct !== null ? (wrong + correct > 0 ? (2 * wrong * correct) / (wrong + correct) : 0) : null,
  };
}

function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'number' ? String(v) : String(v);
  return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** CSV with a header; steps are 1-based in the reward columns, first_error_step is 0-based as in
 *  the JSON (−1: none found). */
export function toCSV(records: GradeResult[]): string {
  const maxSteps = records.reduce((m, r) => Math.max(m, r.rewards.length), 0);
  const header = ['line', 'id', 'student_id', 'status', 'error', 'steps', 'first_error_step', 'score_min', 'score_last', 'score_mean', 'label', 'agreement',
    ...Array.from({ length: maxSteps }, (_, i) => `reward_step_${i + 1}`)];
  const lines = [header.join(',')];
  for (const r of records) {
    lines.push([
      r.line, r.id ?? '', r.student_id ?? '', r.status, r.error ?? '', r.rewards.length,
      r.first_error_step ?? '', r.scores?.min ?? '', r.scores?.last ?? '', r.scores?.mean ?? '',
      r.label ?? '', r.agreement === null ? '' : r.agreement ? 'yes' : 'no',
      ...Array.from({ length: maxSteps }, (_, i) => r.rewards[i] ?? ''),
    ].map(csvField).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}

export interface JsonExport {
  file: string;
  options: ProtocolOptions;
  model: string | null;
  exported_at: string;
  summary: Summary;
  results: GradeResult[];
}

export function toJSON(file: string, options: ProtocolOptions, model: string | null, records: GradeResult[], rows: number): string {
  const out: JsonExport = { file, options, model, exported_at: new Date().toISOString(), summary: summarize(records, rows), results: records };
  return JSON.stringify(out, null, 2) + '\n';
}

/** The records as `genprm grade` writes them: one JSON object per line. */
export function toJSONL(records: GradeResult[]): string {
  return records.map((r) => JSON.stringify(r)).join('\n') + (records.length ? '\n' : '');
}

export function download(name: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
