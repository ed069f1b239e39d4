#!/usr/bin/env node
// Generates the TypeScript declarations of the WIT imports and exports into `types/`, with
// `jco guest-types` (the guest's view: `declare module 'portcullis:plugin/...'`).
//
//   node gen-types.mjs [--wit DIR]           # writes types/
//   node gen-types.mjs [--wit DIR] --check   # exits 1 if types/ is not what the WIT gives
//
// jco is pinned to 1.11.1 (in typegen/, its own lock file): later releases (1.35 tried) fail to read a WIT folder from disk
// ("failed to read path for WIT ... os error 44").

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, mkdir, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const WORLDS = ['endpoint', 'filter'];

async function files(dir, base = dir) {
  const out = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await files(p, base)));
    else out.push(relative(base, p));
  }
  return out.sort();
}

async function main() {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const witArg = args.indexOf('--wit');
  const wit = resolve(
    witArg >= 0
      ? args[witArg + 1]
      : [join(here, 'wit'), join(here, '..', '..', 'wit', 'v0.2'), join(here, '..', '..', 'wit')].find((d) => existsSync(d)) ?? 'wit',
  );
  const jco = join(here, 'typegen', 'node_modules', '@bytecodealliance', 'jco', 'src', 'jco.js');
  if (!existsSync(jco)) {
    console.error('gen-types: jco 1.11.1 is not installed: run `npm ci` in typegen/ first');
    process.exit(2);
  }
  const work = await mkdtemp(join(tmpdir(), 'portcullis-types-'));
  try {
    // Every world's interfaces land in one `interfaces/` folder (the shared ones are the
    // same text for both worlds), next to one declaration file per world.
    const gen = join(work, 'types');
    await mkdir(gen, { recursive: true });
    for (const w of WORLDS) {
      const out = join(work, w);
      execFileSync(process.execPath, [jco, 'guest-types', relative(process.cwd(), wit) || '.', '--world-name', w, '-o', out, '-q'], {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      await cp(out, gen, { recursive: true });
    }
    const dest = join(here, 'types');
    if (!check) {
      await rm(dest, { recursive: true, force: true });
      await cp(gen, dest, { recursive: true });
      console.error(`gen-types: wrote ${dest}`);
      return;
    }
    const [want, have] = [await files(gen), existsSync(dest) ? await files(dest) : []];
    const stale = [];
    for (const f of new Set([...want, ...have])) {
      const a = want.includes(f) ? await readFile(join(gen, f), 'utf8') : null;
      const b = have.includes(f) ? await readFile(join(dest, f), 'utf8') : null;
      if (a !== b) stale.push(f);
    }
    if (stale.length > 0) {
      console.error(`gen-types: types/ is stale for ${stale.join(', ')}: run \`node gen-types.mjs\``);
      process.exit(1);
    }
    console.error('gen-types: types/ is current');
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`gen-types: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
