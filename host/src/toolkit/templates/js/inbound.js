// {{name}}: an inbound filter. It runs before routing, on every request its manifest's
// `[match]` fits, and returns one action: continue, change the request, answer it, or reject it.
import { CONTINUE, Changes, config, header, reject } from 'portcullis-sdk';

export function onRequest(req) {
  // The name of the header to require, from `[config]` in {{name}}.toml.
  const required = config.getOr('require_header', 'x-api-key');
  if (header(req, required) === undefined) {
    // A rejection may carry headers (WIT 0.2.0): tell the client how to authenticate.
    return reject(401, `missing ${required}`, [['www-authenticate', 'ApiKey']]);
  }
  // Tell the upstream which filter let the request through.
  return new Changes().setHeader('x-{{name}}', 'ok').inbound();
}

// The filter world exports both phases; the manifest's `kind` says which one the gateway calls.
export function onResponse(_req, _resp) {
  return CONTINUE;
}
