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
    def test_responses_get_the_header_and_lose_server(self):
        out = run_plugin(ROOT, {"url": "/hello", "response": {"status": 200, "headers": {"server": "nginx"}}})
        self.assertEqual(out.action, "change", out)
        self.assertEqual(out.status, 200)
        self.assertEqual(out.header("x-{{name}}"), "served")
        self.assertIsNone(out.header("server"))


if __name__ == "__main__":
    unittest.main()
