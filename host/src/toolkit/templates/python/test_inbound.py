"""`python3 -m unittest` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin
test` (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the
one PORTCULLIS_BIN names."""

import pathlib
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".portcullis" / "sdk" / "harness" / "python"))
from portcullis_harness import run_plugin  # noqa: E402


class PluginTest(unittest.TestCase):
    def test_requests_without_the_key_are_rejected(self):
        out = run_plugin(ROOT, {"url": "/hello"})
        self.assertEqual(out.action, "reject", out)
        self.assertEqual(out.status, 401)
        self.assertEqual(out.header("www-authenticate"), "ApiKey")

    def test_requests_with_the_key_go_on_with_a_header(self):
        out = run_plugin(ROOT, {"url": "/hello", "headers": {"x-api-key": "k1"}})
        self.assertEqual(out.action, "change", out)
        self.assertEqual(out.header("x-{{name}}"), "ok")


if __name__ == "__main__":
    unittest.main()
