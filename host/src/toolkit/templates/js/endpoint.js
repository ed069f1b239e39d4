// {{name}}: an aggregate endpoint. A route with `endpoint = "{{name}}"` sends requests here;
// it calls clusters (`fetch`, or `fetchAll` for several at once) and answers.
import { config } from 'portcullis-sdk';
import { Call, fetch, jsonResponse } from 'portcullis-sdk/endpoint';

export function handle(req) {
  // The cluster to call, from `[config]` in {{name}}.toml.
  const cluster = config.getOr('cluster', 'backend');
  const call = Call.get(cluster, '/hello').timeout(500).forwardContext(req);
  try {
    // `fetch` returns the reply whatever its status (4xx/5xx are replies), and throws a
    // `CallError` when there is none (timeout, connect failed, invalid-call for a malformed
    // call, ...; `e.kind` says which).
    const reply = fetch(call);
    if (!reply.isSuccess()) {
      return jsonResponse(502, { error: `status ${reply.status}` });
    }
    return jsonResponse(200, { plugin: '{{name}}', backend: reply.json() });
  } catch (e) {
    return jsonResponse(502, { error: String(e && e.message ? e.message : e) });
  }
}
