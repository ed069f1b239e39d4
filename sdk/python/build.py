#!/usr/bin/env python3
"""Builds a Python plugin into a Portcullis component with componentize-py.

    python build.py --world filter|endpoint [--wit DIR] [--module app] -o OUT.wasm APP_DIR

Run it with the Python of a virtualenv that has ``componentize-py`` installed
(``python3 -m venv .venv && .venv/bin/pip install -r requirements.txt``). ``APP_DIR`` holds
the plugin's module (``app.py`` by default) defining ``class WitWorld``; this SDK folder is
put on the module path, so the plugin imports ``portcullis_sdk``. ``--wit`` defaults to this
folder's ``wit/`` copy when present, else ``../../wit/v0.2`` (the gateway repository's:
this SDK targets WIT 0.2.0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, choices=["filter", "endpoint"])
    ap.add_argument("--wit", type=Path)
    ap.add_argument("--module", default="app")
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("app_dir", type=Path)
    a = ap.parse_args()
    wit = a.wit or next((d for d in (HERE / "wit", HERE.parent.parent / "wit" / "v0.2", HERE.parent.parent / "wit") if d.is_dir()), None)
    if wit is None:
        print("portcullis-py-build: no WIT folder found: pass --wit DIR", file=sys.stderr)
        return 2
    if not (a.app_dir / f"{a.module}.py").is_file():
        print(f"portcullis-py-build: no {a.module}.py in {a.app_dir}", file=sys.stderr)
        return 2
    exe = Path(sys.executable).parent / "componentize-py"
    tool = str(exe) if exe.is_file() else shutil.which("componentize-py")
    if tool is None:
        print(
            "portcullis-py-build: componentize-py is not installed for this Python: "
            f"`{sys.executable} -m pip install -r {HERE / 'requirements.txt'}`",
            file=sys.stderr,
        )
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cmd = [
        tool, "-d", str(wit), "-w", a.world, "componentize", a.module,
        "-p", str(a.app_dir.resolve()), "-p", str(HERE), "-o", str(a.out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        return r.returncode
    size = a.out.stat().st_size / 1048576
    print(f"portcullis-py-build: {a.out}: {size:.1f} MiB in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
