"""kill -9 of the whole server (gunicorn master and workers) during a burst of signed step submissions.

Four operators (own accounts, cookies and CSRF tokens) start DEMO-PROC batches and sign their line
clearance, over and over, against gunicorn started as `make run` starts it. Once ``ACKS_BEFORE_KILL``
submissions have been acknowledged (302 to the batch page), the process group gets SIGKILL, while the
operators are still submitting. Then, on the database as the crash left it:

- every acknowledged signed step is stored whole: complete, its "performed" signature, all its values,
  and an audit entry for each of them;
- nothing anywhere is half-written (an execution without its signature, a value or record without its
  audit entry, an audit entry without its record, an audit head out of step with the trail); a
  submission that was in flight at the kill may be stored or not, but only whole;
- `flask --app mfg audit verify` and `flask --app mfg audit signatures` exit 0;
- gunicorn restarted on the same database and port serves again: sign-in and a new signed step.

Pass or fail never depends on timing: the kill comes after a count of acknowledgements, and the
assertions are about the acknowledged set and the wholeness of everything else.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.faults.live import Client, Gunicorn, acknowledged, alive, run_clis
from tests.faults.records import assert_whole_line_clearance, half_written, line_clearance, user_ids

ACKS_BEFORE_KILL = 8


class Burst:
    """Operator threads submitting signed steps until told the server is being killed."""

    def __init__(self, port: int, names: list[str]):
        self.port, self.names = port, names
        self.changed = threading.Condition()
        self.acked: list[tuple[str, int]] = []  # (operator, batch id), answered 302 to the batch page
        self.in_flight: dict[str, int] = {}  # operator -> batch id of the signed submit awaiting its answer
        self.refused: list[str] = []  # answered, but not acknowledged (before the kill: a problem)
        self.errors: list[str] = []  # exceptions before the kill
        self.finished = 0
        self.killing = threading.Event()
        self.threads = [threading.Thread(target=self._operator, args=(name,), daemon=True) for name in names]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _operator(self, name: str) -> None:
        client = Client(self.port, timeout=30)
        try:
            client.sign_in(name)
            while not self.killing.is_set():
                batch_id = client.start_batch()
                with self.changed:
                    self.in_flight[name] = batch_id
                status, location, text = client.sign_line_clearance(batch_id)
                with self.changed:
                    del self.in_flight[name]
                    if acknowledged(batch_id, status, location):
                        self.acked.append((name, batch_id))
                    else:
                        self.refused.append(f"{name} batch {batch_id}: {status} {location} {text[:300]}")
                    self.changed.notify_all()
        except Exception as exc:  # noqa: BLE001 - after the kill, the server being gone is the point
            if not self.killing.is_set():
                with self.changed:
                    self.errors.append(f"{name}: {exc!r}")
        finally:
            with self.changed:
                self.finished += 1
                self.changed.notify_all()

    def wait_for_acks(self, count: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: len(self.acked) >= count or self.finished == len(self.threads)
                                  or self.errors or self.refused, timeout=timeout)
            assert not self.errors and not self.refused, (self.errors, self.refused)
            assert len(self.acked) >= count, f"only {len(self.acked)} acknowledged in {timeout} s"

    def join(self, timeout: float, check: bool = True) -> None:
        for thread in self.threads:
            thread.join(timeout)
        assert not check or not any(t.is_alive() for t in self.threads), "an operator thread did not end"


def test_kill_9_mid_burst_keeps_every_acknowledged_signed_step_whole(live_instance, inspect_engine,
                                                                      tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    server = Gunicorn(live_instance.path, live_instance.database_url, log)
    burst = None
    try:
        server.start()
        burst = Burst(server.port, live_instance.operators)
        burst.start()
        burst.wait_for_acks(ACKS_BEFORE_KILL, timeout=120)
        burst.killing.set()
        killed = server.kill()  # SIGKILL to master and workers, while the operators keep submitting
        burst.join(timeout=45)
        assert len(killed) == 3 and not any(alive(pid) for pid in killed), killed
        assert not burst.errors, burst.errors
        assert not burst.refused, burst.refused  # every answer before the kill was an acknowledgement
        acked, in_flight = list(burst.acked), dict(burst.in_flight)

        # The database as the crash left it.
        with inspect_engine.connect() as conn:
            ids = user_ids(conn, live_instance.operators)
            for name, batch_id in acked:
                step = line_clearance(conn, batch_id)
                assert step is not None, f"acknowledged signed step of batch {batch_id} ({name}) is lost"
                assert_whole_line_clearance(conn, step, ids[name])
            for name, batch_id in in_flight.items():  # may or may not be stored, but only whole
                step = line_clearance(conn, batch_id)
                if step is not None:
                    assert_whole_line_clearance(conn, step, ids[name])
            assert half_written(conn) == []
        verify, signatures = run_clis(live_instance.path, live_instance.database_url, ("audit", "verify"),
                                      ("audit", "signatures"))
        assert verify[0] == 0 and "audit trail intact" in verify[1], verify
        assert signatures[0] == 0 and "signatures intact" in signatures[1], signatures
        print(f"\n{len(acked)} acknowledged, {len(in_flight)} signed submissions in flight at the kill, "
              f"{sum(line_clearance_stored(inspect_engine, b) for b in in_flight.values())} of those stored")

        # Restart on the same database and port: the server serves, and a signed step is stored whole.
        server = Gunicorn(live_instance.path, live_instance.database_url, log, port=server.port)
        server.start()
        client = Client(server.port)
        client.sign_in(live_instance.operators[0])
        status, _, page = client.request("GET", f"/batches/{acked[0][1]}")
        assert status == 200 and "Line clearance" in page
        batch_id = client.start_batch()
        status, location, _ = client.sign_line_clearance(batch_id)
        assert acknowledged(batch_id, status, location), (status, location)
        with inspect_engine.connect() as conn:
            assert_whole_line_clearance(conn, line_clearance(conn, batch_id), ids[live_instance.operators[0]])
            assert half_written(conn) == []
    finally:
        if burst is not None:
            burst.killing.set()
        server.kill()
        if burst is not None:
            burst.join(timeout=45, check=False)


def line_clearance_stored(engine, batch_id: int) -> bool:
    with engine.connect() as conn:
        return line_clearance(conn, batch_id) is not None
