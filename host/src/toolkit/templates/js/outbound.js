// {{name}}: an outbound filter. It runs on the response head (from the upstream, an endpoint,
// or the gateway itself) and may change its status and headers.
import { CONTINUE, Changes, config } from 'portcullis-sdk';

export function onResponse(_req, _resp) {
  const value = config.getOr('header_value', 'served');
  return new Changes().setHeader('x-{{name}}', value).removeHeader('server').outbound();
}

// The filter world exports both phases; the manifest's `kind` says which one the gateway calls.
export function onRequest(_req) {
  return CONTINUE;
}
