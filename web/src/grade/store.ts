// grade/: the grading page's own modules (its entry is pages/grade.ts): jobs and results kept in
// IndexedDB (store.ts), the exports (export.ts) and its stylesheet. They import the package's
// types as 'genprm' and lib/; never pages/ or components/.
//
// Grading jobs and their results in IndexedDB, so closing the tab loses nothing: each result is
// written (a committed transaction, durability "strict") as soon as it is produced, and a job
// keeps its input file, so coming back needs no file pick.
//
// A job's key is a hash of the input file's bytes, its format (the extension decides JSON Lines
// or CSV) and the protocol options: the same file graded with the same options resumes; other
// options make another job.
import type { GradeResult, ProtocolOptions } from 'genprm';

export interface Job {
  key: string;
  fileName: string;
  fileSize: number;
  /** The input file itself. */
  input: Blob;
  options: ProtocolOptions;
  /** Rows in the file (bad rows included). */
  rows: number;
  created: number;
  updated: number;
  /** The model the results so far came from (its label and facts), for the page. */
  model: string | null;
}

export interface StoredResult {
  job: string;
  line: number;
  result: GradeResult;
  /** Milliseconds the verification took (0 for a bad row). */
  ms: number;
  at: number;
  model: string | null;
}

const DB_NAME = 'genprm-grading';
const DB_VERSION = 1;

let opening: Promise<IDBDatabase> | null = null;

function db(): Promise<IDBDatabase> {
  if (!opening) {
    opening = new Promise<IDBDatabase>((resolve, reject) => {
      if (typeof indexedDB === 'undefined') { reject(new Error('this browser gives the page no IndexedDB (private mode?): results cannot be kept')); return; }
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const d = req.result;
        if (!d.objectStoreNames.contains('jobs')) d.createObjectStore('jobs', { keyPath: 'key' });
        if (!d.objectStoreNames.contains('results')) {
          const s = d.createObjectStore('results', { keyPath: ['job', 'line'] });
          s.createIndex('job', 'job');
        }
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error('IndexedDB could not be opened'));
      req.onblocked = () => reject(new Error('IndexedDB is blocked by another tab of this app: close it and reload'));
    });
    opening.catch(() => { opening = null; });
  }
  return opening;
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted (storage full?)'));
  });
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export async function putJob(job: Job): Promise<void> {
  const tx = (await db()).transaction('jobs', 'readwrite', { durability: 'strict' });
  tx.objectStore('jobs').put(job);
  await done(tx);
}

export async function getJob(key: string): Promise<Job | null> {
  const tx = (await db()).transaction('jobs', 'readonly');
  return (await request(tx.objectStore('jobs').get(key))) ?? null;
}

export async function listJobs(): Promise<Job[]> {
  const tx = (await db()).transaction('jobs', 'readonly');
  const jobs = (await request(tx.objectStore('jobs').getAll())) as Job[];
  return jobs.sort((a, b) => b.updated - a.updated);
}

/** Writes one result and bumps the job's time; resolves once it is committed to disk. */
export async function putResult(r: StoredResult): Promise<void> {
  const tx = (await db()).transaction(['results', 'jobs'], 'readwrite', { durability: 'strict' });
  tx.objectStore('results').put(r);
  const jobs = tx.objectStore('jobs');
  const job = (await request(jobs.get(r.job))) as Job | undefined;
  if (job) jobs.put({ ...job, updated: r.at, model: r.model ?? job.model });
  await done(tx);
}

export async function results(job: string): Promise<StoredResult[]> {
  const tx = (await db()).transaction('results', 'readonly');
  const all = (await request(tx.objectStore('results').index('job').getAll(IDBKeyRange.only(job)))) as StoredResult[];
  return all.sort((a, b) => a.line - b.line);
}

export async function deleteJob(key: string): Promise<void> {
  const tx = (await db()).transaction(['results', 'jobs'], 'readwrite', { durability: 'strict' });
  tx.objectStore('jobs').delete(key);
  tx.objectStore('results').delete(IDBKeyRange.bound([key, -Infinity], [key, Infinity]));
  await done(tx);
}

/** SHA-256 of the bytes, the format and the options (keys sorted): the job's key. */
export async function jobKey(bytes: Uint8Array, fileName: string, options: ProtocolOptions): Promise<string> {
  const ext = (/\.[^.]+$/.exec(fileName)?.[0] ?? '').toLowerCase();
  const fileHash = hex(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  const opts = JSON.stringify(Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined).sort(([a], [b]) => a.localeCompare(b))));
  return hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`${fileHash}\n${ext}\n${opts}`)));
}

function hex(buf: ArrayBuffer): string {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
