"""The web view's speed: ``python -m tests.benchmarks.web [--events N] [--reps R]``.

Builds a store of N mixed events (`_graph_data`, default 1,000,000) plus one session of 200
turns and one of 1,000, serves it with a real `lmg serve` on 127.0.0.1, then measures:

- the server time of each data route a page reads (the ``ms`` of the service's access log:
  from the request's arrival to the response's last byte), warm, R times each;
- how long the service takes to build the text index of the search, from the first search
  (a store served for the first time has none);
- the browser's time to a usable session page (headless Chromium, from navigation to the
  first turn's heading on screen, and to the last turn's in the page) for the 200- and the
  1,000-turn session.

Prints a Markdown table (docs/benchmarks.md, "The web view"). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

import eventlog
from eventlog import events as ev
from eventlog._ids import new_id

from ._data import pool
from ._graph_data import build_graph_store

LMG = Path(sys.executable).with_name("lmg")
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


RARE = "zebra-quartz-1729"
"""The text of one prompt of one session: what a search for rare text looks for."""


def index_s(http: httpx.Client) -> float:
    """Search once (which asks for the text index) and wait until the index holds all that
    is folded: the seconds that took."""
    began = time.monotonic()
    http.get("/v1/stores/default/sessions", params={"q": RARE})
    while True:
        position = http.get("/v1/stores/default/position").json()
        if position["indexed_lsn"] >= position["folded_lsn"]:
            return time.monotonic() - began
        time.sleep(0.5)


def long_session(log: eventlog.EventLog, turns: int) -> uuid.UUID:
    """A session of `turns` turns (a tool call every tenth), appended 100 turns at a time."""
    texts = pool()
    session = log.create_session(metadata={"user": f"long-{turns}"})
    for start in range(0, turns, 100):
        batch: list[ev.EventBase] = []
        for i in range(start, min(turns, start + 100)):
            prompt = ev.PromptAdded(id=new_id(), session_id=session.id, content=texts.prompt(i))
            response = ev.ResponseAdded(
                id=new_id(),
                prompt_id=prompt.id,
                content=texts.response(i),
                usage=ev.TokenUsage(100, 50),
                latency_ms=300.0,
                model="large-2",
            )
            batch += [prompt, response]
            if i % 10 == 0:
                tool = ev.ToolInvoked(
                    id=new_id(), response_id=response.id, tool_name="sql", parameters={"q": i}
                )
                batch += [tool, ev.ToolCompleted(tool_id=tool.id, result={"rows": i})]
        log.append(batch)
    return session.id


def serve(store: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    err = tmp / "serve.err"
    with err.open("wb") as sink:
        proc = subprocess.Popen([str(LMG), "serve", str(store), "--port", "0"], stderr=sink)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        found = re.search(r"lmg serve: (http://\S+)", err.read_text())
        if found:
            url = found.group(1)
            while httpx.get(f"{url}/readyz").status_code != 200:
                time.sleep(0.5)
            return proc, url, err
        time.sleep(0.5)
    raise SystemExit("lmg serve did not start")


def server_ms(err: Path, path: str) -> list[float]:
    """The access log's times of the requests for `path` (with its query)."""
    times = []
    for line in err.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["path"] == path.split("?", maxsplit=1)[0]:
                times.append(record["ms"])
    return times


def measure_routes(url: str, err: Path, routes: dict[str, str], reps: int) -> list[str]:
    rows = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for name, path in routes.items():
            before = len(server_ms(err, path))
            for _ in range(reps + 2):
                answer = http.get(path)
                assert answer.status_code == 200, answer.text
            time.sleep(0.2)  # the access log line follows the response
            times = server_ms(err, path)[before + 2 :]  # two warm-ups left out
            p50 = statistics.median(times)
            p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
            rows.append(f"| {name} | {p50:,.1f} | {p95:,.1f} | {len(answer.content):,} |")
    return rows


def measure_browser(url: str, sessions: dict[int, uuid.UUID], reps: int) -> list[str]:
    """Per session: navigation to the first turn's heading on screen (the page is readable
    and answers input: it draws the rest between frames), and to the last turn's heading in
    the page (every turn drawn)."""
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        for turns, session in sessions.items():
            first, every = [], []
            for _ in range(reps + 1):
                began = time.monotonic()
                page.goto(f"{url}/ui/stores/default/sessions/{session}", wait_until="commit")
                page.locator("#turn-0").wait_for(state="visible", timeout=120_000)
                first.append((time.monotonic() - began) * 1e3)
                page.locator(f"#turn-{turns - 1}").wait_for(state="attached", timeout=120_000)
                every.append((time.monotonic() - began) * 1e3)
            for label, times in (("first turns on screen", first[1:]), ("every turn", every[1:])):
                rows.append(
                    f"| session page of {turns:,} turns, {label} | "
                    f"{statistics.median(times):,.0f} | {max(times):,.0f} |"
                )
        browser.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.web", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--store", type=Path, default=None, help="build here, or reuse if built")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp_name:
        tmp = Path(tmp_name)
        store = args.store or tmp / "store"
        began = time.monotonic()
        ids_file = store.with_name(store.name + ".sessions.json")
        if not ids_file.exists():
            build_graph_store(store, args.events)
            with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
                ids = {200: long_session(log, 200), 1000: long_session(log, 1000)}
            ids_file.write_text(json.dumps({k: str(v) for k, v in ids.items()}))
        known = json.loads(ids_file.read_text())
        if "rare" not in known:  # text one session holds (a store built before it had none)
            with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
                rare = log.create_session(metadata={"user": "rare"}).id
                log.add_prompt(rare, f"the one {RARE} in the store")
            known["rare"] = str(rare)
            ids_file.write_text(json.dumps(known))
        sessions = {int(k): uuid.UUID(v) for k, v in known.items() if k.isdigit()}
        with eventlog.open(store, readonly=True) as log:
            total = log.next_lsn()
        print(f"built {total:,} events in {time.monotonic() - began:.0f} s", file=sys.stderr)
        began = time.monotonic()
        proc, url, err = serve(store, tmp)
        print(f"served and folded in {time.monotonic() - began:.0f} s", file=sys.stderr)
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                print(f"text index built in {index_s(http):.0f} s", file=sys.stderr)
                listed = http.get("/v1/stores/default/sessions?limit=1").json()["sessions"]
                response = http.post(
                    "/v1/stores/default/sql",
                    json={"query": "SELECT id FROM responses ORDER BY lsn DESC LIMIT 1"},
                ).json()["rows"][0][0]
            base = "/v1/stores/default"
            routes = {
                "sessions list, newest first (50 of them)": f"{base}/sessions",
                "sessions list by tokens": f"{base}/sessions?sort=tokens&order=desc",
                "sessions list, page 100": f"{base}/sessions?offset=4950",
                "sessions list, search in content": f"{base}/sessions?q=database",
                "sessions list, search, page 100": f"{base}/sessions?q=database&offset=4950",
                "sessions list, search no session matches": f"{base}/sessions?q=zqxj",
                "sessions list, search one session holds": f"{base}/sessions?q={RARE}",
                "sessions list, user filter": f"{base}/sessions?user=long-200",
                "session of 200 turns": f"{base}/sessions/{sessions[200]}/view",
                "session of 1,000 turns": f"{base}/sessions/{sessions[1000]}/view",
                "session of 1,000 turns, first 40": f"{base}/sessions/{sessions[1000]}/view"
                "?limit=40",
                "lineage, depth 5": f"{base}/nodes/{response}/lineage?depth=5",
                "agents (agent_stats and series)": f"{base}/agents",
                "templates": f"{base}/templates",
            }
            assert listed, "the store has sessions"
            lines = [
                f"{total:,} events; server time from the service's access log, "
                f"{args.reps} warm requests each",
                "",
                "| route | p50 ms | p95 ms | bytes |",
                "|---|---:|---:|---:|",
                *measure_routes(url, err, routes, args.reps),
                "",
                "| browser (headless Chromium) | median ms | max ms |",
                "|---|---:|---:|",
                *measure_browser(url, sessions, 5),
            ]
            print("\n".join(lines))
        finally:
            proc.terminate()
            proc.wait(120)


if __name__ == "__main__":
    main()
