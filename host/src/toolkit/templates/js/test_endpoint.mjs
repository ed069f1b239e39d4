// `npm test` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin test`
// (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the one
// PORTCULLIS_BIN names. Stub clusters are served on 127.0.0.1 for the run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runPlugin } from "../.portcullis/sdk/harness/js/index.mjs";

const dir = fileURLToPath(new URL("..", import.meta.url));
const backend = (status, body) => ({
  backend: { status, headers: { "content-type": "application/json" }, body },
});

test("answers with what the backend said", () => {
  const out = runPlugin(dir, { url: "/api/{{name}}" }, backend(200, '{"greeting":"hello"}'));
  assert.equal(out.action, "respond", JSON.stringify(out));
  assert.equal(out.status, 200);
  assert.match(out.body, /hello/);
});

test("a failing backend is a 502", () => {
  const out = runPlugin(dir, { url: "/api/{{name}}" }, backend(503, "down"));
  assert.equal(out.status, 502, JSON.stringify(out));
});
