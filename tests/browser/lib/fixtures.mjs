// Broken model directories for the bad-input tests, made fresh in a temporary directory and
// served under /__test__/models/: a truncated safetensors file, a config that is not Qwen2, and a
// good copy of the tiny model for the cache test.
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile, stat } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './paths.mjs';

export const TINY = join(REPO, 'tests', 'fixtures', 'models', 'tiny-genprm');

/** The native CLI cargo test built (the dev profile). */
export function genprmBinary() {
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'genprm', 'target');
  return join(target, 'debug', 'genprm');
}

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
  await makeHostileModels(models);
  return root;
}

/** Reads a safetensors file as { header, data } (data: the bytes after the header). */
async function readSafetensors(path) {
  const bytes = await readFile(path);
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), data: bytes.subarray(8 + n) };
}

/** Writes a safetensors file from header text (written as given) and data bytes. */
async function writeSafetensors(path, headerText, data) {
  const head = Buffer.from(headerText, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(head.length));
  await writeFile(path, Buffer.concat([len, head, data]));
}

async function editConfig(dir, edit) {
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  edit(config);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

/**
 * The classes of bad model input the loader must refuse with a clear error (issue 22), as the
 * browser reads them: sizes beyond reason, a config that does not match its weights, offsets
 * that overflow or overlap, weights that are not finite, and shard names that leave the model's
 * folder. `secret/` is a good model the escaping index points at: the test checks that nothing
 * under it is ever requested.
 */
async function makeHostileModels(models) {
  await copyModel(join(models, 'secret'));

  const huge = join(models, 'hostile-huge-layers');
  await copyModel(huge);
  await editConfig(huge, (c) => { c.num_hidden_layers = 1_000_000_000; });

  const fewer = join(models, 'hostile-fewer-layers');
  await copyModel(fewer);
  await editConfig(fewer, (c) => { c.num_hidden_layers -= 1; });

  const weights = await readSafetensors(join(TINY, 'model.safetensors'));
  const names = Object.keys(weights.header).filter((k) => k !== '__metadata__');

  // An end offset past 2^64: the text is written by hand (JSON numbers in JS stop at 2^53).
  const overflow = join(models, 'hostile-offset-overflow');
  await copyModel(overflow);
  const big = structuredClone(weights.header);
  big['model.norm.weight'].data_offsets = ['@BIG@', '@BIG@'];
  await writeSafetensors(join(overflow, 'model.safetensors'),
    JSON.stringify(big).replace('["@BIG@","@BIG@"]', '[18446744073709551000,18446744073709551615]'), weights.data);

  // Two tensors over the same bytes.
  const overlap = join(models, 'hostile-overlap');
  await copyModel(overlap);
  const over = structuredClone(weights.header);
  const [a, b] = names.filter((n) => over[n].shape.length === 1).slice(0, 2);
  over[b].data_offsets = [...over[a].data_offsets];
  await writeSafetensors(join(overlap, 'model.safetensors'), JSON.stringify(over), weights.data);

  // A NaN in the final norm.
  const nan = join(models, 'hostile-nan');
  await copyModel(nan);
  const data = Buffer.from(weights.data);
  data.writeFloatLE(Number.NaN, weights.header['model.norm.weight'].data_offsets[0]);
  await writeSafetensors(join(nan, 'model.safetensors'), JSON.stringify(weights.header), data);

  // Indexes whose shard names leave the folder: by `..`, and by a percent-encoded `..` that a
  // URL parser decodes.
  for (const [dir, shard] of [['hostile-index-dotdot', '../secret/model.safetensors'], ['hostile-index-encoded', '%2e%2e/secret/model.safetensors']]) {
    const d = join(models, dir);
    await copyModel(d);
    await rm(join(d, 'model.safetensors'));
    const weightMap = Object.fromEntries(names.map((n) => [n, shard]));
    await writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
}
