"""Retention on a real `lmg serve`: ``--retention-every`` applies each store's policy on a
schedule, through the erase route's own path (the service's handle on the log and its owner
of the projections, which keeps serving), never over a running erasure; ``"due": true`` on the
erase route applies it on demand. Every file under the store is scanned afterwards."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest

import eventlog
from eventlog._erase import _erasure_lock
from tests._processes import LMG, WAIT_S
from tests.projections.test_erase import scan

from .test_service import Service
from .test_service_erase import Served

pytestmark = pytest.mark.slow  # a real server process

DAY = 86_400 * 1_000_000_000
ANY_INT = mock.ANY
_SQL = "/v1/stores/default/sql"
_STATUS = "/v1/stores/{}/retention"


class Aged:
    """A store imported with its times: session `old` spoke 40 days ago, `new` an hour ago."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.old_secret = f"zq{secrets.token_hex(10)}"
        self.new_secret = f"zk{secrets.token_hex(10)}"
        self.old, self.new = uuid.uuid4(), uuid.uuid4()
        now = time.time_ns()
        lines = [
            {"type": "session.created", "id": str(self.old), "ts": now - 40 * DAY},
            {"type": "prompt.added", "id": str(uuid.uuid4()), "session_id": str(self.old),
             "content": f"long ago {self.old_secret}", "ts": now - 40 * DAY + 1},
            {"type": "session.created", "id": str(self.new), "ts": now - 3_600 * 10**9},
            {"type": "prompt.added", "id": str(uuid.uuid4()), "session_id": str(self.new),
             "content": f"lately {self.new_secret}", "ts": now - 3_600 * 10**9 + 1},
        ]  # fmt: skip
        eventlog.import_events(path, [json.dumps(line).encode() for line in lines])
        eventlog.set_retention(path, eventlog.RetentionPolicy(content_days=30))


def _runs(service: Service) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in service.child.stderr().splitlines() if x[:1] == "{"]
    return [line for line in lines if line.get("event") == "retention"]


def _erasures(store: Path) -> list[eventlog.events.ErasureApplied]:
    with eventlog.open(store, readonly=True) as log:
        found = [e for _, e in log.read(0) if isinstance(e, eventlog.events.ErasureApplied)]
    return found


def test_the_schedule_erases_old_content_and_the_service_keeps_serving(tmp_path: Path) -> None:
    aged = Aged(tmp_path / "store")
    assert scan(aged.path, [aged.old_secret])
    service = Service(tmp_path, [str(aged.path), "--retention-every", "1s"])
    try:
        # (a run's line comes once its erasure is done and the projections folded anew:
        # scanning the files sooner would race with the fold's own writes)
        service.child.wait_for(lambda: len(_runs(service)) >= 2, "a second run")
        assert scan(aged.path, [aged.old_secret]) == []
        first, second = _runs(service)[:2]
        assert first["store"] == "default" and first["outcome"] == "erased"
        assert (first["events"], first["first_lsn"], first["last_lsn"]) == (2, 0, 1)
        assert second["outcome"] == "nothing_due" and second["events"] == 0
        assert "retention every 1 s; stores with a policy: default" in service.child.stderr()

        # Reads go on, from the database folded anew: the old prompt shows the marker.
        query = {"query": "SELECT content FROM prompts ORDER BY lsn"}
        rows = service.http.post(_SQL, json=query).json()["rows"]
        assert rows[0][0].startswith("[erased ") and rows[1][0] == f"lately {aged.new_secret}"
        assert service.http.get("/readyz").status_code == 200
        metrics = service.http.get("/metrics").text
        assert 'lmg_retention_runs_total{outcome="erased",store="default"} 1.0' in metrics
        assert 'lmg_retention_events_erased_total{store="default"} 2.0' in metrics
        assert 'lmg_retention_last_run_timestamp_seconds{store="default"}' in metrics
        shown = service.http.get(_STATUS.format("default")).json()
        assert shown["policy"] == {"content_days": 30} and shown["every_s"] == 1.0
        assert shown["due"]["content_events"] == 0 and shown["due"]["sessions"] == 0
        assert shown["last_run"]["outcome"] == "nothing_due"
    finally:
        assert service.stop() == 0
    assert scan(aged.path, [aged.old_secret]) == []
    assert scan(aged.path, [aged.new_secret])  # recent content stays
    assert [e.actor for e in _erasures(aged.path)] == ["retention"]  # nothing due: no record
    assert eventlog.verify(aged.path) == []


def test_the_schedule_never_runs_over_a_running_erasure(tmp_path: Path) -> None:
    aged = Aged(tmp_path / "store")
    service = None
    try:
        with _erasure_lock(aged.path):  # as a running `lmg erase` holds it
            service = Service(tmp_path, [str(aged.path), "--retention-every", "1s"])
            service.child.wait_for(lambda: len(_runs(service)) >= 2, "two runs")
            assert {r["outcome"] for r in _runs(service)} == {"busy"}
            assert scan(aged.path, [aged.old_secret])
        service.child.wait_for(lambda: _runs(service)[-1]["outcome"] == "erased", "the erasure")
        assert scan(aged.path, [aged.old_secret]) == []
    finally:
        assert service is None or service.stop() == 0


def test_a_failed_run_is_logged_without_paths_and_the_service_serves_on(tmp_path: Path) -> None:
    store = tmp_path / "store"
    eventlog.open(store).close()
    (store / "RETENTION.json").write_text("{not json")
    service = Service(tmp_path, [str(store), "--retention-every", "1s"])
    try:
        service.child.wait_for(lambda: len(_runs(service)) >= 2, "two runs")
        run = _runs(service)[0]
        assert run["outcome"] == "failed" and "is unreadable" in str(run["error"])
        assert str(tmp_path) not in service.child.stderr()
        assert "stores with a policy: default" in service.child.stderr()
        assert service.http.get("/readyz").status_code == 200
    finally:
        assert service.stop() == 0


def test_erase_route_due_applies_the_policy_on_demand(tmp_path: Path) -> None:
    aged = Aged(tmp_path / "store")
    bare = tmp_path / "bare"
    eventlog.open(bare).close()
    service = Service(tmp_path, [str(aged.path), "--store", f"bare={bare}"])
    try:
        notice = "retention is not applied here (no --retention-every); stores with a policy: "
        assert notice + "default (give --retention-every to apply it)" in service.child.stderr()
        assert service.http.get(_STATUS.format("default")).json() == {
            "policy": {"content_days": 30},
            "due": {"content_before": ANY_INT, "content_events": 2, "sessions": 0},
            "every_s": None,  # no schedule
            "last_run": None,
        }
        bare_status = service.http.get(_STATUS.format("bare")).json()
        assert bare_status["policy"] is None and bare_status["due"] is None
        erase = "/v1/stores/{}/erase"
        listed = service.http.post(erase.format("default"), json={"due": True, "dry_run": True})
        assert [row[0] for row in listed.json()["selected"]] == [0, 1]
        assert scan(aged.path, [aged.old_secret])  # a dry run changes nothing
        for name, body, code in [
            ("default", {"due": True, "before": "2026-01-01T00:00:00Z"}, "bad_argument"),
            ("bare", {"due": True}, "no_retention_policy"),
        ]:
            refused = service.http.post(erase.format(name), json=body)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == code
        done = service.http.post(erase.format("default"), json={"due": True, "by": "dpo"})
        assert done.status_code == 200 and done.json()["record"]["events"] == 2
        assert service.http.get("/readyz").status_code == 200
        again = service.http.post(erase.format("default"), json={"due": True}).json()
        assert again["record"]["events"] == 0 and again["ranges"] == []  # done already
    finally:
        assert service.stop() == 0
    assert scan(aged.path, [aged.old_secret]) == []
    assert [e.actor for e in _erasures(aged.path)] == ["dpo"]


def test_the_retention_route_is_for_admin_tokens_only(tmp_path: Path) -> None:
    served = Served(tmp_path)
    try:
        route = _STATUS.format("default")
        for token, status in [(None, 401), (served.reader, 403), (served.writer, 403)]:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            assert served.service.http.get(route, headers=headers).status_code == status
        hidden = {"Authorization": f"Bearer {served.admin}"}
        assert served.service.http.get(_STATUS.format("other"), headers=hidden).status_code == 404
        shown = served.service.http.get(route, headers=hidden).json()
        assert shown == {"policy": None, "due": None, "every_s": None, "last_run": None}
    finally:
        assert served.service.stop() == 0


@pytest.mark.parametrize("value", ["0s", "0.5s", "soon", "-1h", "6", "367d", "1e3s", ""])
def test_a_bad_retention_period_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    store = tmp_path / "store"
    eventlog.open(store).close()
    before = sorted(p.name for p in store.iterdir())
    run = subprocess.run(
        [str(LMG), "serve", str(store), "--port", "0", "--retention-every", value],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: --retention-every ") and "Traceback" not in run.stderr
    assert sorted(p.name for p in store.iterdir()) == before  # nothing written
