"""{{name}}: an outbound filter. It runs on the response head (from the upstream, an
endpoint, or the gateway itself) and may change its status and headers."""

from portcullis import config, ResponseChanges, Filter


class Plugin(Filter):
    def on_response(self, req, resp):
        value = config.get("header_value") or "served"
        return ResponseChanges().set_header("x-{{name}}", value).remove_header("server").action()
