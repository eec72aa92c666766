"""Thin blueprints: parse the form, call a service, commit, redirect or render."""

from __future__ import annotations

from flask import Flask

from ..domain import display, words
from ..domain.signing import MEANING_LABELS


def init_app(app: Flask) -> None:
    from . import (
        actions,
        admin,
        audit_trail,
        auth,
        batches,
        clinical,
        custody,
        documents,
        errors,
        input_guard,
        main,
        masterdata,
        results,
        review,
        security,
        sops,
        trial,
    )

    security.init_app(app)
    actions.init_app(app)  # after security: it acts as the signed-in user
    input_guard.init_app(app)  # first of the request hooks, whatever the order of registration
    errors.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(audit_trail.bp)
    app.register_blueprint(sops.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(masterdata.bp)
    app.register_blueprint(clinical.bp)
    app.register_blueprint(custody.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(documents.bp)
    app.register_blueprint(results.bp)
    app.register_blueprint(trial.bp)
    app.context_processor(results.alert_banner)
    # how a signature's meaning is written (21 CFR 11.50), from the one table of meanings
    # numbers and moments for people: one formatter (mfg.domain.display) for screens and documents
    app.jinja_env.filters.update(cells=display.cells, grouped=display.grouped, utc=display.utc, iso=display.iso)
    # the master record's words for what it names by id (mfg.domain.words): no internal id on a screen
    app.jinja_env.filters.update(reference=words.reference, expression_words=words.expression,
                                 step_name=words.step_name, plain=words.plain, unit=words.unit,
                                 step_title=words.step_title)
    app.jinja_env.globals["meaning_labels"] = {m.value: label for m, label in MEANING_LABELS.items()}
