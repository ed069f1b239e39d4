"""`python3 -m unittest` runs {{name}}.wasm in the gateway's sandbox through `portcullis plugin
test` (build it first: `portcullis plugin build`). The binary is `portcullis` on PATH, or the
one PORTCULLIS_BIN names. Stub clusters are served on 127.0.0.1 for the run."""

import pathlib
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".portcullis" / "sdk" / "harness" / "python"))
from portcullis_harness import run_plugin  # noqa: E402


def backend(status, body):
    return {"backend": {"status": status, "headers": {"content-type": "application/json"}, "body": body}}


class PluginTest(unittest.TestCase):
    def test_answers_with_what_the_backend_said(self):
        out = run_plugin(ROOT, {"url": "/api/{{name}}"}, clusters=backend(200, '{"greeting":"hello"}'))
        self.assertEqual(out.action, "respond", out)
        self.assertEqual(out.status, 200)
        self.assertIn("hello", out.body)

    def test_a_failing_backend_is_a_502(self):
        out = run_plugin(ROOT, {"url": "/api/{{name}}"}, clusters=backend(503, "down"))
        self.assertEqual(out.status, 502, out)


if __name__ == "__main__":
    unittest.main()
