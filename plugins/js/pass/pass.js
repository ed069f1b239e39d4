// The cheapest useful JavaScript filter: reads one header and continues. The benchmark's and
// the per-call tests' JavaScript row (bench/run.sh `portcullis-js-filter`), the
// counterpart of the Rust `pass` filter (cors on a request without `Origin`).
//
//   kind = "inbound"

import { CONTINUE, reject } from 'portcullis-sdk';

export function onRequest(req) {
  if (req.header('x-pass-deny') !== undefined) {
    return reject(403, 'denied by pass_js');
  }
  return CONTINUE;
}
