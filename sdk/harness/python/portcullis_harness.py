"""portcullis-harness for Python: run a built plugin (NAME.wasm next to NAME.toml) in the
gateway's own sandbox from unittest (or pytest), through `portcullis plugin test --json`.

    from portcullis_harness import run_plugin
    out = run_plugin(project_dir, {"url": "/hello", "headers": {"x-api-key": "k1"}})
    assert out.action == "change"   # continue | change | respond | reject | failed | skipped
    assert out.header("x-my-plugin") == "ok"

Endpoints get stub clusters: run_plugin(dir, req, clusters={"backend": {"status": 200, "body": "{}"}}).
The binary is `portcullis` on PATH, or the one PORTCULLIS_BIN names.
"""

import json
import os
import subprocess
import tempfile
from types import SimpleNamespace


class HarnessError(Exception):
    """The run itself failed: no binary, the plugin not built or not loading."""


def run_plugin(directory, request, clusters=None, timeout=120):
    """Runs one request; returns the result (action, status, headers, body, timings)."""
    bin_ = os.environ.get("PORTCULLIS_BIN", "portcullis")
    with tempfile.TemporaryDirectory(prefix="portcullis-harness-") as tmp:
        path = os.path.join(tmp, "request.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"request": [request], "cluster": clusters or {}}, f)
        try:
            run = subprocess.run(
                [bin_, "plugin", "test", "--json", "--dir", str(directory), "--request", path],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except FileNotFoundError as e:
            raise HarnessError(f"running {bin_}: {e} (install portcullis on PATH, or set PORTCULLIS_BIN)") from e
    try:
        result = json.loads(run.stdout)["results"][0]
    except (ValueError, KeyError, IndexError) as e:
        raise HarnessError(f"portcullis plugin test failed (exit {run.returncode}): {run.stderr.strip()}") from e
    out = SimpleNamespace(**result)
    out.header = lambda name: next((v for k, v in out.headers if k.lower() == name.lower()), None)
    return out
