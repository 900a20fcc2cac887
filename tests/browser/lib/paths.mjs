import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DIST = join(REPO, 'web', 'dist');
export const ARTIFACTS = join(REPO, 'tests', 'artifacts');
