"""{{name}}: an outbound filter. It runs on the response head (from the upstream, an
endpoint, or the gateway itself) and may change its status and headers."""

from portcullis_sdk import Changes, Filter, config


class WitWorld(Filter):
    def on_response(self, req, resp):
        value = config.get_or("header_value", "served")
        return Changes().set_header("x-{{name}}", value).remove_header("server").outbound()
