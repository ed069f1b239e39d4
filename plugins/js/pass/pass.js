// The cheapest useful JavaScript filter: reads one header and continues. The benchmark's and
// the per-call tests' JavaScript row (bench/run.sh `portcullis-js-filter`), the
// counterpart of the Rust `pass` filter (cors on a request without `Origin`). A request
// carrying `x-pass-deny` is rejected with 401 and a `www-authenticate` header (a WIT 0.2.0
// rejection with headers; tests/tests/js_plugins.rs checks it on the wire).
//
//   kind = "inbound"

import { CONTINUE, reject } from 'portcullis-sdk';

export function onRequest(req) {
  if (req.header('x-pass-deny') !== undefined) {
    return reject(401, 'denied by pass_js', [['www-authenticate', 'Bearer realm="pass"']]);
  }
  return CONTINUE;
}
