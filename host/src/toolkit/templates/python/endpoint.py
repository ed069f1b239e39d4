"""{{name}}: an aggregate endpoint. A route with `endpoint = "{{name}}"` sends requests
here; it calls clusters (`fetch`, or `fetch_all` for several at once) and answers."""

import json

from portcullis import config, fetch, json_response, Call, Endpoint


class Plugin(Endpoint):
    def handle(self, req):
        # The cluster to call, from `[config]` in {{name}}.toml.
        cluster = config.get("cluster") or "backend"
        try:
            reply = fetch(Call.get(cluster, "/hello", timeout_ms=500))
        except Exception as e:  # a call error: timeout, connect-failed, ...
            return json_response(502, {"error": str(e)})
        if reply.status >= 300:
            return json_response(502, {"error": f"status {reply.status}"})
        return json_response(200, {"plugin": "{{name}}", "backend": json.loads(reply.body)})
