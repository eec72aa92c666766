"""A throwaway demo site for the tools that drive the screens (tools/operator_effort.py, tools/screens/):
an instance folder in a temporary directory set up by `flask --app mfg init --demo` (and demo batches by
`flask --app mfg demo-batch`), the application served on 127.0.0.1 on a free port, and Debian's chromium at
the cleanroom tablet's size.

Nothing here touches instance/ of the checkout: MFG_INSTANCE_PATH points every command and the served
application at the temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).parent / "flask"
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
# The cleanroom tablet the screens are made for: 1024x768, touch (as tests/browser/pages.py).
TABLET: dict[str, Any] = {"viewport": {"width": 1024, "height": 768}, "has_touch": True}
PASSWORD = "demo-pass-2026"  # the demo accounts' documented password (mfg/demo/seed.py)


def use_instance(folder: Path) -> None:
    """Point this process (the served application) and every `flask` command it runs at ``folder``; the
    documents worker is off (a command that decides makes its documents inline)."""
    os.environ["MFG_INSTANCE_PATH"] = str(folder)
    os.environ["MFG_DOCUMENT_WORKER"] = "false"
    os.environ.pop("MFG_DATABASE_URL", None)  # the instance's own SQLite file


def flask(*args: str) -> str:
    """Run `flask --app mfg ARGS` on the instance (see :func:`use_instance`); its output, or an error naming it."""
    done = subprocess.run([str(FLASK), "--app", "mfg", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1, a free port, in a daemon thread; yields the base URL."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium through Playwright (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
