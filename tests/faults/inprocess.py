"""Helpers of the in-process fault tests (Flask test client, CSRF off, real database)."""

from __future__ import annotations

from mfg.models import utcnow
from tests.support import PASSWORD


def start_batch(client) -> int:
    response = client.post("/batches/start", data={"code": "DEMO-PROC"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.location.rsplit("/", 1)[1])


def line_clearance_form(comments: str = "") -> dict[str, str]:
    """Olivia's line clearance; ``comments`` goes into the step comment and each value's comment."""
    form = {"v_area_clear": "y", "v_cabinet": "BSC-01", "v_started_at": utcnow().strftime("%Y-%m-%d %H:%M"),
            "username": "olivia", "password": PASSWORD}
    if comments:
        form |= {"comment": comments, "c_area_clear": comments, "c_cabinet": comments, "c_started_at": comments}
    return form


def sign_line_clearance(client, batch_id: int, **kwargs):
    return client.post(f"/batches/{batch_id}/step/0/line_clearance/1", data=line_clearance_form(**kwargs))
