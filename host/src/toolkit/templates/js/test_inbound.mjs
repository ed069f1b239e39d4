// `npm test` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin test`
// (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the one
// PORTCULLIS_BIN names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runPlugin } from "../.portcullis/sdk/harness/js/index.mjs";

const dir = fileURLToPath(new URL("..", import.meta.url));

test("requests without the key are rejected", () => {
  const out = runPlugin(dir, { url: "/hello" });
  assert.equal(out.action, "reject", JSON.stringify(out));
  assert.equal(out.status, 401);
  assert.equal(out.header("www-authenticate"), "ApiKey");
});

test("requests with the key go on with a header", () => {
  const out = runPlugin(dir, { url: "/hello", headers: { "x-api-key": "k1" } });
  assert.equal(out.action, "change", JSON.stringify(out));
  assert.equal(out.header("x-{{name}}"), "ok");
});
