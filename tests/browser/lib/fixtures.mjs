// Broken model directories for the bad-input tests, made fresh in a temporary directory and
// served under /__test__/models/: a truncated safetensors file, a config that is not Qwen2, and a
// good copy of the tiny model for the cache test.
import { copyFile, mkdir, mkdtemp, readdir, readFile, truncate, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './paths.mjs';

export const TINY = join(REPO, 'tests', 'fixtures', 'models', 'tiny-genprm');

async function copyModel(to) {
  await mkdir(to, { recursive: true });
  for (const f of await readdir(TINY)) await copyFile(join(TINY, f), join(to, f));
}

export async function makeBrokenModels() {
  const root = await mkdtemp(join(tmpdir(), 'genprm-browser-'));
  const models = join(root, 'models');
  const truncated = join(models, 'truncated');
  await copyModel(truncated);
  const size = (await stat(join(truncated, 'model.safetensors'))).size;
  await truncate(join(truncated, 'model.safetensors'), Math.floor(size / 2));
  const notQwen = join(models, 'not-qwen2');
  await copyModel(notQwen);
  const config = JSON.parse(await readFile(join(notQwen, 'config.json'), 'utf8'));
  config.model_type = 'llama';
  config.architectures = ['LlamaForCausalLM'];
  await writeFile(join(notQwen, 'config.json'), JSON.stringify(config, null, 2));
  // A good copy, deleted by the cache test after the first load: the second load must come
  // from the browser's Cache API.
  await copyModel(join(models, 'cached'));
  return root;
}
