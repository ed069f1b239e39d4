// {{name}}: an aggregate endpoint. A route with `endpoint = "{{name}}"` sends requests here;
// it calls clusters (`fetch`, or `fetchAll` for several at once) and answers.
import { config } from 'portcullis-sdk';
import { Call, fetch, jsonResponse, ok2xx } from 'portcullis-sdk/endpoint';

export function handle(req) {
  // The cluster to call, from `[config]` in {{name}}.toml.
  const cluster = config.getOr('cluster', 'backend');
  const call = Call.get(cluster, '/hello').timeout(500).forwardContext(req);
  try {
    return jsonResponse(200, { plugin: '{{name}}', backend: ok2xx(fetch(call)).json() });
  } catch (e) {
    return jsonResponse(502, { error: e.message });
  }
}
