// portcullis-harness for JavaScript: run a built plugin (NAME.wasm next to NAME.toml) in the
// gateway's own sandbox from node's test runner, through `portcullis plugin test --json`.
//
//   import { runPlugin } from "portcullis-harness";
//   const out = runPlugin(projectDir, { url: "/hello", headers: { "x-api-key": "k1" } });
//   assert.equal(out.action, "change");          // continue | change | respond | reject | failed | skipped
//   assert.equal(out.header("x-my-plugin"), "ok");
//
// Endpoints get stub clusters: runPlugin(dir, req, { backend: { status: 200, body: "{}" } }).
// The binary is `portcullis` on PATH, or the one PORTCULLIS_BIN names.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Runs one request; returns the result (`action`, `status`, `headers`, `body`, timings). */
export function runPlugin(dir, request, clusters = {}) {
  const tmp = mkdtempSync(join(tmpdir(), "portcullis-harness-"));
  const file = join(tmp, "request.json");
  try {
    writeFileSync(file, JSON.stringify({ request: [request], cluster: clusters }));
    const bin = process.env.PORTCULLIS_BIN || "portcullis";
    const run = spawnSync(bin, ["plugin", "test", "--json", "--dir", dir, "--request", file], {
      encoding: "utf8",
      maxBuffer: 16 << 20,
      timeout: 120_000,
    });
    if (run.error) {
      throw new Error(`running ${bin}: ${run.error.message} (install portcullis on PATH, or set PORTCULLIS_BIN)`);
    }
    let parsed;
    try {
      parsed = JSON.parse(run.stdout);
    } catch {
      throw new Error(`portcullis plugin test failed (exit ${run.status}): ${run.stderr.trim()}`);
    }
    const out = parsed.results[0];
    out.header = (name) => {
      const hit = out.headers.find(([k]) => k.toLowerCase() === name.toLowerCase());
      return hit ? hit[1] : undefined;
    };
    return out;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
