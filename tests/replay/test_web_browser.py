"""The web view in a real browser: headless Chromium (Debian's, driven by Playwright) against a
real `lmg serve` on 127.0.0.1 holding the demo store. Assertions are on what the page shows.

CI installs Chromium (`.ci/run`); on a machine without it these tests skip. With
``LMG_SCREENSHOTS=1`` the screenshots they take replace those in docs/images.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlog
from tests._processes import LMG, ROOT, WAIT_S
from tests.replay.test_service import Service

pytestmark = pytest.mark.slow  # a browser and a service per module: seconds, not milliseconds

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
expect = sync_api.expect

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
IMAGES = ROOT / "docs" / "images"
MS = int(WAIT_S * 1000)


class Site:
    """The served demo store, with the ids a test needs and a way to append."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.url = service.url
        self.session = self.one("SELECT id FROM sessions")
        self.handoff_lsn = int(self.one("SELECT lsn FROM handoffs"))
        self.response = self.one("SELECT id FROM responses ORDER BY lsn DESC LIMIT 1")

    def one(self, query: str) -> Any:
        answer = self.service.http.post("/v1/stores/default/sql", json={"query": query})
        return answer.json()["rows"][0][0]

    def append(self, events: list[dict[str, Any]]) -> list[str]:
        answer = self.service.http.post("/v1/stores/default/events", json=events)
        assert answer.status_code == 200, answer.text
        ids: list[str] = answer.json()["ids"]
        return ids

    def page(self, path: str) -> str:
        return f"{self.url}/ui/stores/default/{path}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    subprocess.run(
        [str(LMG), "demo", str(tmp / "store")], capture_output=True, check=True, timeout=WAIT_S
    )
    service = Service(tmp, [str(tmp / "store")])
    yield Site(service)
    assert service.stop() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == []


def shot(page: Any, name: str, tmp_path: Path) -> None:
    """A full-page screenshot: into docs/images with LMG_SCREENSHOTS=1, else tmp_path."""
    folder = IMAGES if os.environ.get("LMG_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"web-{name}.png"), full_page=True)


def test_search_the_list_open_a_session_and_expand_a_tool_call(
    site: Site, page: Any, tmp_path: Path
) -> None:
    page.goto(f"{site.url}/")  # redirected to the only store's sessions
    main = page.locator("main")
    expect(main.get_by_role("heading", name="Sessions")).to_be_visible()
    row = main.get_by_role("row").filter(has_text="triage, coder")
    expect(row).to_contain_text("ada")
    shot(page, "sessions", tmp_path)
    page.get_by_label("Search").fill("rows per day")
    page.get_by_role("button", name="Search").click()
    expect(main.get_by_role("table")).to_contain_text("1\u20131 of 1")
    page.get_by_label("Search").fill("no session says this")
    page.get_by_role("button", name="Search").click()
    expect(main.get_by_role("table")).to_contain_text("of 0")
    page.go_back()
    main.get_by_role("link", name=site.session[-12:]).click()
    expect(main.get_by_role("heading", name="Turn 2")).to_be_visible()
    expect(main.get_by_role("note")).to_contain_text("Handoff: triage → coder")
    failed = main.locator("details.tool", has_text="search_docs")
    expect(failed).to_contain_text("failed")
    expect(failed.get_by_text("docs index offline")).to_be_hidden()
    failed.locator("summary").click()
    expect(failed.get_by_text("docs index offline")).to_be_visible()
    expect(failed).to_contain_text('"q": "date_trunc"')
    shot(page, "session", tmp_path)


def test_the_lineage_of_a_response_clicks_through(site: Site, page: Any, tmp_path: Path) -> None:
    page.goto(site.page(f"sessions/{site.session}"))
    page.locator("article", has_text="Turn 2").locator("section.response").get_by_role(
        "link", name="lineage"
    ).click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("Lineage of response: SELECT date_trunc")
    graph = page.locator("svg.lineage")
    expect(graph).to_contain_text("expert-answer v1")
    shot(page, "lineage", tmp_path)
    graph.get_by_role("link", name="Lineage of template expert-answer v1").click()
    expect(heading).to_have_text("Lineage of template expert-answer v1")
    page.locator("main").get_by_role("link", name="template answer v1").first.click()
    expect(heading).to_have_text("Lineage of template answer v1")


def test_the_slider_before_the_handoff_shows_it_gone(site: Site, page: Any, tmp_path: Path) -> None:
    page.goto(site.page(f"sessions/{site.session}"))
    main = page.locator("main")
    expect(main.get_by_role("note")).to_contain_text("Handoff")
    page.get_by_label("Point in history (LSN)").fill(str(site.handoff_lsn - 1))
    expect(page.locator("#timebar")).to_contain_text(f"as it was at LSN {site.handoff_lsn - 1}")
    expect(main.get_by_role("heading", name="Turn 1")).to_be_visible()
    expect(main).not_to_contain_text("Handoff")
    expect(main.get_by_role("heading", name="Turn 2")).to_have_count(0)
    shot(page, "time-travel", tmp_path)
    page.get_by_label("At", exact=True).fill(str(site.handoff_lsn))
    page.get_by_role("button", name="Go").click()
    expect(main.get_by_role("note")).to_contain_text("Handoff: triage → coder")
    page.get_by_role("link", name="Diff to now").click()
    expect(page.locator("main")).to_contain_text(f"LSN {site.handoff_lsn + 1}: prompt.added")


def test_a_sql_query_shows_a_table_and_downloads_csv(site: Site, page: Any, tmp_path: Path) -> None:
    page.goto(site.page("sql"))
    page.get_by_label("Query").fill("SELECT name, tool_failures FROM agent_stats ORDER BY name")
    page.get_by_role("button", name="Run").click()
    table = page.locator("main table")
    expect(table.get_by_role("row")).to_have_count(3)
    expect(table.get_by_role("row").nth(1)).to_contain_text("coder")
    shot(page, "sql", tmp_path)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    csv = Path(download.value.path()).read_bytes()
    assert csv == b"name,tool_failures\r\ncoder,1\r\ntriage,0\r\n"
    page.get_by_label("Query").fill("DELETE FROM prompts")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("sql_refused")


def test_a_csv_download_keeps_stored_text_from_running_as_a_formula(site: Site, page: Any) -> None:
    """Stored text is anyone's (an agent records its users' prompts): a prompt written as
    ``=HYPERLINK(...)`` went into the downloaded CSV as it was, and a spreadsheet opening
    the file runs it as a formula (CSV injection). A text cell that begins with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return now begins with ``'``; numbers stay, and
    text that is a number and nothing else."""
    texts = ['=HYPERLINK("http://127.0.0.1/x","y")', "+1+1", "-1+1", "@SUM(A1)", "\t=1", "-1.50"]
    site.append([{"type": "prompt.added", "session_id": site.session, "content": t} for t in texts])
    page.goto(site.page("sql"))
    query = "SELECT content, -5 AS n FROM prompts WHERE content IN ({}) ORDER BY lsn"
    listed = ", ".join("'" + t.replace("'", "''") + "'" for t in texts)
    page.get_by_label("Query").fill(query.format(listed))
    page.get_by_role("button", name="Run").click()
    expect(page.locator("main table").get_by_role("row")).to_have_count(len(texts) + 1)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    csv = Path(download.value.path()).read_bytes()
    assert csv == (
        b"content,n\r\n"
        b'"\'=HYPERLINK(""http://127.0.0.1/x"",""y"")",-5\r\n'
        b"'+1+1,-5\r\n'-1+1,-5\r\n'@SUM(A1),-5\r\n'\t=1,-5\r\n-1.50,-5\r\n"
    )


def test_a_point_goes_exactly_and_the_scopes_are_asked_once(site: Site, page: Any) -> None:
    """An LSN in a JSON body (the SQL page at a point) is sent as its own digits: through a
    JavaScript number, 9007199254740993 went as 9007199254740992. The token's scopes are
    asked of ``/v1/stores`` once a tab, not again at each move of the time bar (each one
    loads the page again)."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/v1/stores") else None)
    page.goto(site.page("sql?at=9007199254740993"))
    expect(page.locator("#timebar")).to_contain_text("LSN 9007199254740993")
    with page.expect_request(lambda r: r.url.endswith("/sql") and r.method == "POST") as sent:
        page.get_by_role("button", name="Run").click()
    assert '"at":9007199254740993' in sent.value.post_data
    expect(page.get_by_role("alert")).to_contain_text("bad_point")
    page.goto(site.page(f"sessions?at={site.handoff_lsn}"))
    expect(page.locator("#timebar")).to_contain_text(f"LSN {site.handoff_lsn}")
    assert len(asked) == 1, asked


def test_agents_and_template_versions_side_by_side(site: Site, page: Any, tmp_path: Path) -> None:
    template = site.one("SELECT id FROM templates WHERE name = 'answer'")
    site.append(
        [{"type": "template.updated", "template_id": template, "text": "Answer briefly: {{q}}",
          "variables": [{"name": "q"}]}]
    )  # fmt: skip
    page.goto(site.page("agents"))
    rows = page.locator("main tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="coder")).to_contain_text("answers programming questions")
    shot(page, "agents", tmp_path)
    page.get_by_role("link", name="Templates").click()
    answer = page.locator("section.template", has_text="answer lineage").first
    expect(answer.locator(".udiff")).to_contain_text("+Answer briefly: {{q}}")
    expect(answer.locator(".udiff")).to_contain_text("-Answer as {{persona}}: {{question}}")
    expect(answer.locator(".impact")).to_contain_text("2 prompts, 2 responses, 2 tool calls")
    shot(page, "templates", tmp_path)


def test_a_live_append_appears_on_the_open_session(site: Site, page: Any) -> None:
    page.goto(site.page(f"sessions/{site.session}"))
    expect(page.locator("#status")).to_contain_text("Live")
    site.append(
        [{"type": "prompt.added", "session_id": site.session, "content": "a question, live"}]
    )
    expect(page.locator("main")).to_contain_text("a question, live")
    page.goto(site.page("sessions"))
    expect(page.locator("#status")).to_contain_text("Live")
    site.append([{"type": "session.created", "metadata": {"user": "grace"}}])
    expect(page.locator("main table")).to_contain_text("grace")


XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def test_content_that_looks_like_html_shows_as_text_and_runs_nothing(site: Site, page: Any) -> None:
    session = site.append([{"type": "session.created", "metadata": {"user": XSS}}])[0]
    prompt = site.append([{"type": "prompt.added", "session_id": session, "content": XSS}])[0]
    response = site.append(
        [{"type": "response.added", "prompt_id": prompt, "content": f"**bold** {XSS}"}]
    )[0]
    site.append(
        [{"type": "tool.invoked", "response_id": response, "tool_name": XSS,
          "parameters": {"html": XSS}}]
    )  # fmt: skip
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    for path in (f"sessions/{session}", f"lineage/{prompt}", "sessions?q=script"):
        page.goto(site.page(path))
        expect(page.locator("main")).to_contain_text("<script>window.__xss = 1</script>")
        assert page.evaluate("window.__xss") is None
        assert page.locator("main img, main script").count() == 0
    page.goto(site.page(f"sessions/{session}"))
    page.locator("details.tool summary").click()
    expect(page.locator("details.tool")).to_contain_text('"html": "<script>')
    assert page.evaluate("window.__xss") is None
    assert violations == []


def test_a_phone_sized_screen_reads_the_session(site: Site, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(site.page(f"sessions/{site.session}"))
        expect(page.get_by_role("heading", name="Turn 2")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways ({width} px)"
        shot(page, "session-phone", tmp_path)
    finally:
        context.close()


def test_a_token_signs_in_and_its_scopes_decide(tmp_path: Path, browser: Any) -> None:
    auth = tmp_path / "tokens.json"
    store = tmp_path / "store"
    subprocess.run([str(LMG), "demo", str(store)], capture_output=True, check=True)
    token = _token(auth, "reader", ["read"])
    service = Service(tmp_path, [str(store), "--auth", str(auth)])
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(MS)
        page.goto(f"{service.url}/ui/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Token").fill("lmg_wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("main")).to_contain_text("That token was refused.")
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("main table")).to_contain_text("triage, coder")
        expect(page.locator("#timebar")).to_contain_text("Now: LSN")
        expect(page.get_by_text("Fork from here")).to_have_count(0)  # not an admin token
        page.get_by_role("link", name="SQL").click()
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_role("alert")).to_have_text(
            "This token may not run SQL (it needs the sql scope)."
        )
    finally:
        context.close()
        assert service.stop() == 0


def _token(auth: Path, name: str, scopes: list[str]) -> str:
    args = [str(LMG), "token", "add", "--auth", str(auth), "--name", name, "--store", "*"]
    for scope in scopes:
        args += ["--scope", scope]
    made = subprocess.run(args, capture_output=True, text=True, check=True, timeout=WAIT_S)
    found = re.search(r"lmg_\S+", made.stdout)
    assert found is not None, made.stdout
    return found.group(0)


def test_the_spans_of_a_sessions_trace_show_as_a_waterfall(
    site: Site, page: Any, tmp_path: Path
) -> None:
    trace = "ab" * 16
    session = site.append([{"type": "session.created", "metadata": {"trace_id": trace}}])[0]
    site.append([{"type": "prompt.added", "session_id": session, "content": "traced"}])
    t0 = 1_800_000_000_000_000_000
    spans = [
        ("00000000000000a1", None, "invoke_agent triage", 0, 900, "ok"),
        ("00000000000000a2", "00000000000000a1", "chat small-1", 50, 400, "ok"),
        ("00000000000000a3", "00000000000000a1", "execute_tool search_docs", 450, 880, "error"),
    ]
    site.append(
        [
            {"type": "span.recorded", "trace_id": trace, "span_id": span_id,
             "parent_span_id": parent, "name": name, "start_ns": t0 + start * 1_000_000,
             "end_ns": t0 + end * 1_000_000, "status": status}
            for span_id, parent, name, start, end, status in spans
        ]
    )  # fmt: skip
    page.goto(site.page(f"sessions/{session}"))
    waterfall = page.get_by_role("img", name="Spans of the session's traces (3)")
    expect(waterfall).to_contain_text("execute_tool search_docs")
    bars = waterfall.locator("rect")
    assert [bars.nth(i).get_attribute("class") for i in range(3)] == [
        "span ok", "span ok", "span error"
    ]  # fmt: skip
    shot(page, "spans", tmp_path)


def test_every_page_works_from_the_keyboard_with_labelled_fields(site: Site, page: Any) -> None:
    """Each field has a label, and a tool call opens with the keyboard alone."""
    for path in ("sessions", f"sessions/{site.session}", "agents", "templates", "sql"):
        page.goto(site.page(path))
        expect(page.locator("main h1")).to_be_visible()
        expect(page.get_by_label("Point in history (LSN)")).to_be_visible()
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter((e) => !e.labels.length && !e.getAttribute('aria-label'))
               .map((e) => e.outerHTML)"""
        )
        assert unlabelled == [], path
    page.goto(site.page(f"sessions/{site.session}"))
    summary = page.locator("details.tool summary", has_text="search_docs")
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator("details.tool", has_text="search_docs")).to_have_attribute("open", "")


def test_a_larger_store_pages_and_sorts_on_the_server(tmp_path: Path, browser: Any) -> None:
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        for i in range(120):
            session = log.create_session(metadata={"user": f"user-{i:03d}"})
            log.add_prompts_batch([(session.id, f"q{j}") for j in range(i % 7 + 1)])
    service = Service(tmp_path, [str(store)])
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.set_default_timeout(MS)
        page.goto(f"{service.url}/ui/stores/default/sessions")
        caption = page.locator("main caption")
        expect(caption).to_have_text("Sessions 1\u201350 of 120")
        page.get_by_role("link", name="Older page").click()
        expect(caption).to_have_text("Sessions 51\u2013100 of 120")
        page.get_by_role("link", name="Turns").click()
        expect(caption).to_have_text("Sessions 1\u201350 of 120")
        first = page.locator("main tbody tr").first
        expect(first.locator("td").nth(4)).to_have_text("7")
        expect(page.get_by_role("columnheader", name="Turns")).to_have_attribute(
            "aria-sort", "descending"
        )
        page.get_by_role("link", name="Turns").click()
        expect(first.locator("td").nth(4)).to_have_text("1")
        page.get_by_label("User").fill("user-042")
        page.get_by_role("button", name="Search").click()
        expect(caption).to_have_text("Sessions 1\u20131 of 1")
        expect(first.locator("td").nth(4)).to_have_text("1")
    finally:
        context.close()
        assert service.stop() == 0


def test_a_long_session_is_readable_first_and_fills_in_steps(tmp_path: Path, browser: Any) -> None:
    """The first screen of turns is drawn from a first, small request; the rest arrive in
    later requests and are appended in order, each turn once."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        session = log.create_session()
        log.add_prompts_batch([(session.id, f"question {i}") for i in range(130)])
    service = Service(tmp_path, [str(store)])
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.set_default_timeout(MS)
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/view" in r.url else None)
        page.goto(f"{service.url}/ui/stores/default/sessions/{session.id}")
        expect(page.get_by_role("heading", name="Turn 130")).to_be_attached()
        headings = page.locator("main article h2").all_text_contents()  # drawn or not yet
        assert [re.findall(r"^Turn (\d+)", h) for h in headings] == [
            [str(i)] for i in range(1, 131)
        ]
        assert page.locator("main").get_by_text("question 129", exact=True).count() == 1
        expect(page.locator("main")).not_to_contain_text("Loading the other turns")
        assert [re.findall(r"offset=\d+&limit=\d+", url) for url in asked] == [
            ["offset=0&limit=40"], ["offset=40&limit=500"]
        ]  # fmt: skip
    finally:
        context.close()
        assert service.stop() == 0


def test_an_agents_sparklines_have_a_point_per_span_of_time(tmp_path: Path, browser: Any) -> None:
    """A span of time in which an agent answered nothing is a 0, not left out: the lines
    of all agents share one time axis."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        busy, idle = log.add_agent("busy", "worker"), log.add_agent("idle", "worker")
        session = log.create_session()
        for i in range(3):
            prompt = log.add_prompt(session.id, f"q{i}")
            log.assign_agent_to_prompt(prompt, idle if i == 1 else busy)
            log.add_response(prompt, "a", eventlog.TokenUsage(1, 10 * (i + 1)), latency_ms=1.0)
    service = Service(tmp_path, [str(store)])
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(MS)
        page.goto(f"{service.url}/ui/stores/default/agents")
        idle_row = page.locator("main tbody tr", has_text="idle")
        tokens = idle_row.get_by_role("img", name="tokens")
        expect(tokens).to_have_attribute("aria-label", re.compile(r"^tokens: (0, )+21(, 0)+$"))
        points = tokens.locator("polyline").get_attribute("points") or ""
        busy_points = (
            page.locator("main tbody tr", has_text="busy")
            .get_by_role("img", name="tokens")
            .locator("polyline")
            .get_attribute("points")
            or ""
        )
        assert len(points.split()) == len(busy_points.split()) > 2
    finally:
        context.close()
        assert service.stop() == 0


def test_fork_from_the_slider_makes_a_store_without_the_handoff(
    site: Site, page: Any, tmp_path: Path
) -> None:
    """Without auth every token is an admin: the time bar offers "Fork from here". (Last in
    the module: from here on, the service serves two stores.)"""
    page.goto(site.page(f"sessions/{site.session}"))
    page.get_by_label("Point in history (LSN)").fill(str(site.handoff_lsn - 1))
    expect(page.locator("#timebar")).to_contain_text(f"as it was at LSN {site.handoff_lsn - 1}")
    page.get_by_text("Fork from here").click()
    page.get_by_label("New store's name").fill("before-handoff")
    page.get_by_role("button", name="Fork", exact=True).click()
    result = page.locator("#timebar .fork-result")
    expect(result).to_contain_text(
        f"Forked {site.handoff_lsn} events (up to LSN {site.handoff_lsn - 1}) "
        "into store before-handoff"
    )
    shot(page, "fork", tmp_path)
    page.get_by_label("New store's name").fill("before-handoff")
    page.get_by_role("button", name="Fork", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("name_taken")
    page.goto(f"{site.url}/ui/stores/before-handoff/sessions/{site.session}")
    main = page.locator("main")
    expect(main.get_by_role("heading", name="Turn 1")).to_be_visible()
    expect(main).not_to_contain_text("Handoff")
    expect(page.locator("#timebar")).to_contain_text(f"Now: LSN {site.handoff_lsn - 1}")
