"""The cheapest useful Python filter: reads one header and continues. The benchmark's and the
per-call tests' Python row (bench/run.sh ``portcullis-py-filter``), the counterpart of the
Rust ``pass`` filter (cors on a request without ``Origin``). A request carrying
``x-pass-deny`` is rejected with 401 and a ``www-authenticate`` header (a WIT 0.2.0 rejection
with headers; tests/tests/python_plugins.rs checks it on the wire).

    kind = "inbound"
"""

from portcullis_sdk import CONTINUE, Filter, reject


class WitWorld(Filter):
    def on_request(self, req):
        if req.header("x-pass-deny") is not None:
            return reject(401, "denied by pass_py", [("www-authenticate", 'Bearer realm="pass"')])
        return CONTINUE
