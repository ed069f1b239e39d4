"""{{name}}: an aggregate endpoint. A route with `endpoint = "{{name}}"` sends requests
here; it calls clusters (`fetch`, or `fetch_all` for several at once) and answers."""

from portcullis_sdk import config
from portcullis_sdk.endpoint import Call, CallError, fetch, json_response


class WitWorld:
    def handle(self, req):
        # The cluster to call, from `[config]` in {{name}}.toml.
        cluster = config.get_or("cluster", "backend")
        try:
            reply = fetch(Call.get(cluster, "/hello").timeout(500).forward_context(req))
        except CallError as e:  # timeout, connect-failed, unknown-cluster, invalid-call, ... (e.kind)
            return json_response(502, {"error": str(e)})
        if not reply.is_success():
            return json_response(502, {"error": f"status {reply.status}"})
        return json_response(200, {"plugin": "{{name}}", "backend": reply.json()})
