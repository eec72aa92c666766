"""NK-cell manufacturing electronic batch record system.

``create_app`` builds the application without touching the database: configuration, extensions,
blueprints, CLI commands and error handlers. ``flask --app mfg init`` prepares the instance folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from .config import DEFAULTS, TEMPLATES_DIR, from_environment
from .extensions import csrf, db, login_manager


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    # The instance folder: MFG_INSTANCE_PATH, else Flask's default, ``instance/`` at the root of a source
    # checkout, or ``<virtual environment>/var/mfg-instance`` for an installed package.
    app = Flask(__name__, instance_relative_config=True, instance_path=os.environ.get("MFG_INSTANCE_PATH") or None,
                template_folder=str(TEMPLATES_DIR))
    if test_config and "INSTANCE_PATH" in test_config:
        app.instance_path = str(test_config["INSTANCE_PATH"])
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.update(from_environment())
    if test_config:
        app.config.update(test_config)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = f"sqlite:///{Path(app.instance_path) / 'mfg.sqlite3'}"
    if not app.config.get("SECRET_KEY"):
        # No instance configuration yet: refuse to serve with a guessable key. `flask --app mfg init`
        # writes one; the CLI itself must still start to run it.
        app.config["SECRET_KEY"] = None

    if int(app.config["TRUSTED_PROXIES"]) > 0:
        # behind a reverse proxy (TLS), the client's address is the proxy's X-Forwarded-For entry: sign-in
        # throttling per address (web.throttle) and the audit trail would otherwise see only the proxy
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)

    from . import web
    web.init_app(app)

    from . import cli
    cli.init_app(app)

    from . import document_worker
    document_worker.init_app(app)
    return app
