"""The cheapest useful Python filter: reads one header and continues. The benchmark's and the
per-call tests' Python row (bench/run.sh ``portcullis-py-filter``), the counterpart of the
Rust ``pass`` filter (cors on a request without ``Origin``).

    kind = "inbound"
"""

from portcullis_sdk import CONTINUE, Filter, reject


class WitWorld(Filter):
    def on_request(self, req):
        if req.header("x-pass-deny") is not None:
            return reject(403, "denied by pass_py")
        return CONTINUE
