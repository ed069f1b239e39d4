"""{{name}}: an inbound filter. It runs before routing, on every request its manifest's
`[match]` fits, and returns one action: continue, change the request, answer it, or reject it."""

from portcullis_sdk import Changes, Filter, config, reject


class WitWorld(Filter):
    def on_request(self, req):
        # The name of the header to require, from `[config]` in {{name}}.toml.
        required = config.get_or("require_header", "x-api-key")
        if req.header(required) is None:
            # A rejection may carry headers (WIT 0.2.0): tell the client how to authenticate.
            return reject(401, f"missing {required}", [("www-authenticate", "ApiKey")])
        # Tell the upstream which filter let the request through.
        return Changes().set_header("x-{{name}}", "ok").inbound()
