#!/usr/bin/env node
// Builds a JavaScript plugin into a Portcullis component with componentize-js
// (SpiderMonkey/StarlingMonkey, Wizer-initialized at build time).
//
//   node build.mjs --world filter|endpoint [--wit DIR] [--minimal] -o OUT.wasm ENTRY.js
//
// `--minimal` leaves out console output, clocks and random numbers (a "pure" component, with
// fewer imports). It does not make calls measurably cheaper: interleaved in one gateway, the
// trivial filter cost 75–88 µs per call built `--minimal` and 75–108 µs without
// (docs/plugins.md, section 11).
//
// `--wit` defaults to this package's `wit/` copy when present, else `../../wit` (the
// gateway repository's). The plugin imports the SDK as `portcullis-sdk` (and
// `portcullis-sdk/endpoint`): the entry's folder is copied into a temporary build folder
// next to a copy of this SDK, those two specifiers are rewritten to relative paths there,
// and componentize-js bundles the result. Nothing is written next to the sources.

import { componentize } from '@bytecodealliance/componentize-js';
import { init, parse } from 'es-module-lexer';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** Sources copied at most: a plugin is a handful of modules, not a node_modules tree. */
const MAX_FILES = 500;
/** The SDK files a plugin may import. */
const SDK_FILES = ['index.js', 'endpoint.js'];
const SPECIFIERS = { 'portcullis-sdk': 'index.js', 'portcullis-sdk/endpoint': 'endpoint.js' };

function usage(msg) {
  if (msg) console.error(`portcullis-js-build: ${msg}`);
  console.error('usage: node build.mjs --world filter|endpoint [--wit DIR] [--minimal] -o OUT.wasm ENTRY.js');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { world: undefined, wit: undefined, out: undefined, entry: undefined, minimal: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === '--world' || v === '-w') a.world = argv[++i];
    else if (v === '--wit') a.wit = argv[++i];
    else if (v === '--minimal') a.minimal = true;
    else if (v === '-o' || v === '--out') a.out = argv[++i];
    else if (v.startsWith('-')) usage(`unknown option ${v}`);
    else if (a.entry === undefined) a.entry = v;
    else usage(`unexpected argument ${v}`);
  }
  if (a.world !== 'filter' && a.world !== 'endpoint') usage('--world must be filter or endpoint');
  if (!a.out) usage('-o OUT.wasm is required');
  if (!a.entry) usage('ENTRY.js is required');
  a.wit ??= [join(here, 'wit'), join(here, '..', '..', 'wit', 'v0.2'), join(here, '..', '..', 'wit')].find((d) => existsSync(d));
  if (!a.wit) usage('no WIT folder found: pass --wit DIR');
  return a;
}

/** Copies the `.js`/`.mjs` files under `from` (no dot folders, no node_modules) to `to`. */
async function copySources(from, to, count = { n: 0 }) {
  await mkdir(to, { recursive: true });
  for (const e of await readdir(from, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    const src = join(from, e.name);
    if (e.isDirectory()) {
      await copySources(src, join(to, e.name), count);
    } else if (e.isFile() && /\.m?js$/.test(e.name)) {
      if (++count.n > MAX_FILES) throw new Error(`more than ${MAX_FILES} source files under ${from}`);
      await cp(src, join(to, e.name));
    }
  }
  return count.n;
}

/** Rewrites `portcullis-sdk[/endpoint]` imports in every copied file to the SDK copy. */
async function rewriteImports(dir, sdkDir) {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (p !== sdkDir) await rewriteImports(p, sdkDir);
      continue;
    }
    const src = await readFile(p, 'utf8');
    const [imports] = parse(src, p);
    let out = '';
    let at = 0;
    for (const im of imports) {
      const target = im.n !== undefined ? SPECIFIERS[im.n] : undefined;
      if (target === undefined || im.d > -1) continue; // dynamic imports are not rewritten
      let rel = relative(dirname(p), join(sdkDir, target)).split(sep).join('/');
      if (!rel.startsWith('.')) rel = `./${rel}`;
      out += src.slice(at, im.s) + rel;
      at = im.e;
    }
    if (at > 0) await writeFile(p, out + src.slice(at));
  }
}

/** The filter world's exports a plugin may leave out: like the Rust SDK's `Filter` trait,
 * the one the manifest's `kind` does not call continues unchanged. */
const FILTER_DEFAULTS = {
  onRequest: "export function onRequest(req) { return { tag: 'continue' }; }",
  onResponse: "export function onResponse(req, resp) { return { tag: 'continue' }; }",
};

/** The module to componentize: the entry itself, or (for a filter that exports only one of
 * `onRequest` / `onResponse`) a wrapper re-exporting it with a default for the other. */
async function withDefaults(src, entry, world) {
  if (world !== 'filter') return join(src, entry);
  const [, exports] = parse(await readFile(join(src, entry), 'utf8'));
  const names = new Set(exports.map((e) => e.n));
  const missing = Object.keys(FILTER_DEFAULTS).filter((n) => !names.has(n));
  if (missing.length === 0) return join(src, entry);
  if (missing.length === 2) throw new Error(`${entry} exports neither onRequest nor onResponse`);
  const wrapper = join(src, '.portcullis-entry.js');
  const lines = [`export * from './${entry}';`, ...missing.map((n) => FILTER_DEFAULTS[n])];
  await writeFile(wrapper, lines.join('\n') + '\n');
  return wrapper;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const entry = resolve(a.entry);
  if (!(await stat(entry).catch(() => null))?.isFile()) usage(`no such file: ${a.entry}`);
  await init;
  const work = await mkdtemp(join(tmpdir(), 'portcullis-js-'));
  try {
    const src = join(work, 'src');
    await copySources(dirname(entry), src);
    const sdkDir = join(src, '.portcullis-sdk');
    await mkdir(sdkDir, { recursive: true });
    for (const f of SDK_FILES) await cp(join(here, f), join(sdkDir, f));
    await rewriteImports(src, sdkDir);
    const sourcePath = await withDefaults(src, basename(entry), a.world);
    const started = Date.now();
    const { component } = await componentize({
      sourcePath,
      witPath: resolve(a.wit),
      worldName: a.world,
      // No wasi:http (the gateway does not provide it); console output, clocks and random
      // stay unless --minimal (console.log lands in the gateway's log, tagged with the
      // plugin's name).
      disableFeatures: a.minimal
        ? ['http', 'fetch-event', 'stdio', 'random', 'clocks']
        : ['http', 'fetch-event'],
    });
    await mkdir(dirname(resolve(a.out)), { recursive: true });
    await writeFile(a.out, component);
    console.error(
      `portcullis-js-build: ${a.out}: ${(component.length / 1048576).toFixed(1)} MiB in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`portcullis-js-build: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
