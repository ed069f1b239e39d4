// `npm test` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin test`
// (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the one
// PORTCULLIS_BIN names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runPlugin } from "../.portcullis/sdk/harness/js/index.mjs";

const dir = fileURLToPath(new URL("..", import.meta.url));

test("responses get the header and lose server", () => {
  const out = runPlugin(dir, { url: "/hello", response: { status: 200, headers: { server: "nginx" } } });
  assert.equal(out.action, "change", JSON.stringify(out));
  assert.equal(out.status, 200);
  assert.equal(out.header("x-{{name}}"), "served");
  assert.equal(out.header("server"), undefined);
});
