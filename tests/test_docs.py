"""The docs and examples are part of the product: their code runs, their reference is complete."""

from __future__ import annotations

import ast
import contextlib
import inspect
import itertools
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest

import eventlog
import projections
from eventlog._demo import record_demo
from eventlog._http import Limits
from eventlog.events import event_types
from projections import MemoryGraph
from replay.cli import main as lmg
from tests.replay.test_service import Service

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
SQL_REFERENCE = ROOT / "docs" / "sql.md"
BIN = Path(sys.executable).parent
"""The environment the tests run in: `.venv/bin` under `make`."""
FRESH_SHELL = {**os.environ, "PATH": "/usr/bin:/bin", "VIRTUAL_ENV": ""}
"""A shell in which no virtual environment is active: `lmg` is not on its PATH."""
ACTIVATED = {**FRESH_SHELL, "PATH": f"{BIN}:/usr/bin:/bin"}
"""The same shell after `. .venv/bin/activate`."""


def shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run a command line as a user types it (bash); fail with its output unless it exits 0."""
    result = subprocess.run(
        ["bash", "-c", f"set -e; {command}"],  # as typed: no pipefail
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def as_printed(command: str) -> str:
    """A `.venv/bin/...` command as the docs print it, pointed at this test run's venv."""
    return command.replace(".venv/bin/", f"{BIN}/")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def sql_blocks(page: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize(
    ("page", "index"),
    [(p, i) for p in PAGES for i in range(len(python_blocks(p)))],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
@pytest.mark.slow
def test_doc_code_block_runs(page: Path, index: int, tmp_path: Path) -> None:
    code = python_blocks(page)[index]
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{page.name} block {index} failed:\n{result.stderr}"


def test_every_event_type_is_documented() -> None:
    reference = (ROOT / "docs" / "events.md").read_text()
    missing = [tag for tag in event_types() if f"`{tag}`" not in reference]
    assert not missing, f"docs/events.md lacks sections for {missing}"


def docstring_commands(example: Path) -> tuple[str, list[str]]:
    """The example's own `Run:` line and the shell commands its docstring says to try after."""
    doc = ast.get_docstring(ast.parse(example.read_text())) or ""
    (run,) = re.findall(r"^Run: (\S+ examples/\S+\.py)", doc, flags=re.M)
    then = re.findall(r"^(?:Then, from a shell: |  )(\.venv/bin/lmg .*)$", doc, flags=re.M)
    return run, then


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.slow
def test_example_runs_as_its_docstring_says(example: Path, tmp_path: Path) -> None:
    """`Run: .venv/bin/python examples/x.py [STORE]` works from the clone in a shell with no
    environment active, and so does every command the docstring suggests next."""
    run, then = docstring_commands(example)
    assert run.startswith(".venv/bin/python "), f"{example.name}: {run} needs an active venv"
    store = tmp_path / "store"
    out = shell(f"{as_printed(run)} {store}", ROOT, FRESH_SHELL)
    assert out.strip(), "an example should show what it did"
    for command in then:
        shell(as_printed(command).replace("STORE", str(store)), ROOT, FRESH_SHELL)


# -- the README's shell commands and the demo's closing hints -------------------------------------


def sh_blocks(page: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", page.read_text(), flags=re.S)


def _runnable(line: str) -> str:
    """A `--follow` command never exits: it passes if it is still following after 3 s."""
    command = line.split("#", maxsplit=1)[0].strip()
    return f"timeout 3 {command} || test $? -eq 124" if "--follow" in command else line


@pytest.mark.slow
def test_readme_shell_commands_run_as_printed(tmp_path: Path) -> None:
    """Every `lmg` block of the README, verbatim, in a shell where the README's activation
    step was taken, on the store `make demo` records (`./lmg-data`)."""
    setup = ("make ", "pip install")  # installs: checked by hand from a clean clone, and by CI
    blocks = [b for b in sh_blocks(ROOT / "README.md") if not any(s in b for s in setup)]
    assert len(blocks) >= 3, blocks
    shell(f"{BIN}/lmg demo", tmp_path, FRESH_SHELL)
    for block in blocks:
        lines = [_runnable(line) for line in re.split(r"\n(?![ ]{4})", block.strip())]
        shell("\n".join(lines), tmp_path, ACTIVATED)


def test_readme_says_how_to_run_lmg_without_an_active_venv() -> None:
    readme = (ROOT / "README.md").read_text()
    assert ". .venv/bin/activate" in readme and ".venv/bin/lmg" in readme
    assert re.search(r"^pip install \.", readme, flags=re.M), "a pip path beside make's"
    assert "make test-fast" in readme and "make demo" in readme and "make test " in readme


def demo_hints(output: str) -> list[str]:
    """The commands `lmg demo` prints at its end, one an indented line."""
    tail = output[output.index("\nNext, from this directory") :]
    return re.findall(r"^  (\S*lmg .*)$", tail, flags=re.M)


@pytest.mark.slow
def test_demo_twice_then_every_printed_command_runs_in_a_fresh_shell(tmp_path: Path) -> None:
    """`make demo` twice, then each hint it printed, pasted into a shell with no venv active."""
    first = shell(f"{BIN}/lmg demo", tmp_path, FRESH_SHELL)
    again = shell(f"{BIN}/lmg demo", tmp_path, FRESH_SHELL)
    assert "already holds the demo" in again and "already holds" not in first
    hints = demo_hints(again)
    assert hints == demo_hints(first)
    assert len(hints) >= 8, again
    assert all(h.startswith(f"{BIN}/lmg ") for h in hints), "lmg is not on this shell's PATH"
    assert f"{BIN}/lmg diff lmg-data --from 7 --to 8" in hints  # the README's LSNs still hold
    for hint in hints:
        shell(hint, tmp_path, FRESH_SHELL)
    rows = shell(
        f"{BIN}/lmg sql lmg-data 'SELECT name FROM agents' --format json", tmp_path, FRESH_SHELL
    )
    assert len(rows.splitlines()) == 2, f"the demo was recorded twice:\n{rows}"


def lineage(output: str, heading: str) -> list[str]:
    """The indented lines of a printed tree, from its heading to the next unindented line."""
    lines = output[output.index(heading) :].splitlines()[1:]
    return list(itertools.takewhile(lambda x: x.startswith("  "), lines))


def parent(tree: list[str], line: str) -> str:
    """The line a tree line hangs from: the nearest line above it, indented one step less."""
    i = next(i for i, x in enumerate(tree) if line in x)
    depth = len(tree[i]) - len(tree[i].lstrip())
    above = [x for x in tree[:i] if len(x) - len(x.lstrip()) < depth]
    assert above and len(above[-1]) - len(above[-1].lstrip()) == depth - 2, tree
    return above[-1]


@pytest.mark.slow
def test_demo_lineage_is_a_tree(tmp_path: Path) -> None:
    out = shell(f"{BIN}/lmg demo", tmp_path, FRESH_SHELL)
    tree = lineage(out, "Lineage of the last response")
    assert len(tree) == 8, tree
    assert "prompt 'Answer as a senior" in parent(tree, "PART_OF -> session")
    assert "INHERITS -> template 'expert-answer'" not in "".join(tree)
    assert "template 'expert-answer'" in parent(tree, "INHERITS -> template 'answer'")
    assert "prompt 'Answer as a helpful" in parent(tree, "HANDLED_BY -> agent triage")
    assert "prompt 'Answer as a senior" in parent(tree, "HANDLED_BY -> agent coder")
    assert "response 'SELECT" in parent(tree, "RESPONDS_TO -> prompt")


@pytest.mark.slow
def test_analytics_lineage_is_a_tree(tmp_path: Path) -> None:
    out = shell(f"{BIN}/python examples/analytics.py {tmp_path / 's'}", ROOT, FRESH_SHELL)
    tree = lineage(out, "== Lineage")
    assert "template 'expert-answer'" in parent(tree, "INHERITS -> template 'answer'")
    assert "RESPONDS_TO -> Prompt" in parent(tree, "HANDLED_BY -> agent python")
    assert "INVOKES -> Response" in parent(tree, "RESPONDS_TO -> Prompt")


# -- words, basics ---------------------------------------------------------------------------------


def test_no_team_jargon_in_what_users_read() -> None:
    """ "seed 004" meant something only to the team: the build plan, the Rust crate."""
    texts = [*PAGES, *EXAMPLES, *(ROOT / "tests" / "benchmarks").glob("*.py")]
    texts += [p for pkg in ("eventlog", "projections", "replay") for p in (ROOT / pkg).glob("*.py")]
    found = [f"{p.name}: {m}" for p in texts for m in re.findall(r"seed 00\d", p.read_text(), re.I)]
    assert not found, found


CONCEPTS = ["LSN", "Event", "Frame", "Segment", "Fold", "Checkpoint", "Projection"]
CONCEPTS += ["Snapshot", "View", "Fork"]


def test_concepts_page_defines_each_word_and_the_readme_links_it() -> None:
    page = (ROOT / "docs" / "concepts.md").read_text()
    missing = [w for w in CONCEPTS if not re.search(rf"^\*\*{w}\b", page, flags=re.M)]
    assert not missing, missing
    assert "log sequence number" in page
    readme = (ROOT / "README.md").read_text()
    assert "(docs/concepts.md)" in readme
    first = readme.index("LSN")
    assert "log sequence number" in readme[first : first + 80], (
        "say what an LSN is where it first appears"
    )


def test_every_log_option_is_documented() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", page, flags=re.M))
    fields = eventlog.Options.__struct_fields__
    assert not [f for f in fields if f not in table], f"undocumented options: {fields}"
    defaults = msgspec.structs.asdict(eventlog.Options())
    wrong = [
        f"{f}: {table[f]} documented, {v!r} in code"
        for f, v in defaults.items()
        if _documented_value(table[f]) != _value(v)
    ]
    assert not wrong, "docs/operations.md's option defaults:\n" + "\n".join(wrong)


def _documented_value(cell: str) -> str:
    """A default as a table cell prints it (`FSYNC`, 16 MiB, 65,536), as a plain number or name."""
    cell = cell.strip().strip("`").replace(",", "")
    units = {"KiB": 1 << 10, "MiB": 1 << 20}
    if match := re.fullmatch(r"(\d+) (KiB|MiB)", cell):
        return str(int(match[1]) * units[match[2]])
    return re.sub(r" \(.*\)$", "", cell)  # 8388608 (8 MiB): the number


def _value(value: object) -> str:
    if isinstance(value, eventlog.Durability):
        return value.name
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_service_limit_is_documented_with_its_default() -> None:
    page = (ROOT / "docs" / "service.md").read_text()
    section = page[page.index("\n## Limits\n") :].split("\n## ")[1]
    table = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M))
    defaults = msgspec.structs.asdict(Limits())
    assert not defaults.keys() - table.keys(), "undocumented limits"
    assert not table.keys() - defaults.keys(), "documented limits that do not exist"
    wrong = [
        f"{f}: {table[f]} documented, {v!r} in code"
        for f, v in defaults.items()
        if _documented_value(table[f]) != _value(v)
    ]
    assert not wrong, "docs/service.md's limit defaults:\n" + "\n".join(wrong)


def test_license_and_changelog() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"  # the SPDX form: no deprecation warnings
    assert "Apache License" in (ROOT / "LICENSE").read_text().splitlines()[1]
    assert "](LICENSE)" in (ROOT / "README.md").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## 0\.1\.0", changelog, flags=re.M)


def test_make_test_fast_skips_only_the_slow_marker() -> None:
    makefile = (ROOT / "Makefile").read_text()
    fast = makefile[makefile.index("\ntest-fast:") :].split("\n\n")[0]
    assert '-m "not slow"' in fast
    full = makefile[makefile.index("\ntest:") :].split("\n\n")[0]
    assert "pytest -q\n" in full + "\n" and "not slow" not in full  # make test (CI) runs all


# -- docs/sql.md ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryGraph]:
    """A graph holding `lmg demo`'s conversation, shared by the SQL reference's tests."""
    store = tmp_path_factory.mktemp("sql-reference") / "store"
    with MemoryGraph.open(store, durability=eventlog.Durability.NONE) as g:
        record_demo(g)
        yield g


@pytest.mark.parametrize("index", range(len(sql_blocks(SQL_REFERENCE))), ids=lambda i: f"sql{i}")
def test_sql_reference_query_runs(demo_graph: MemoryGraph, index: int) -> None:
    query = sql_blocks(SQL_REFERENCE)[index]
    rows = demo_graph.rows(query)
    # The demo exercises every table, so a query that finds nothing there is probably wrong.
    assert rows, f"docs/sql.md SQL block {index} returned no rows on the demo:\n{query}"


def _section(text: str, table: str) -> str:
    """The part of the page under the heading of `table`, up to the next heading."""
    heading = re.search(rf"^#{{2,4}} `{re.escape(table)}`\s*$", text, flags=re.M)
    assert heading, f"docs/sql.md has no heading for `{table}`"
    rest = text[heading.end() :]
    following = re.search(r"^#{1,4} ", rest, flags=re.M)
    return rest if following is None else rest[: following.start()]


def test_sql_reference_documents_every_column(demo_graph: MemoryGraph) -> None:
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in demo_graph.rows(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ):
        columns.setdefault(table, []).append((column, data_type))
    expected = {*projections.TABLE_NAMES, "handoffs", "nodes", "lmg_checkpoints", "lmg_meta"}
    assert expected <= columns.keys(), f"not in the database: {expected - columns.keys()}"

    text = SQL_REFERENCE.read_text()
    problems: list[str] = []
    for table in sorted(columns):  # every table and view the database holds, not only those
        section = _section(text, table)
        documented = dict(re.findall(r"^\| `(\w+)` \| ([A-Z\[\]]+) \|", section, flags=re.M))
        for column, data_type in columns[table]:
            if column not in documented:
                problems.append(f"{table}.{column} ({data_type}) is not documented")
            elif documented[column] != data_type:
                problems.append(f"{table}.{column} is {data_type}, documented {documented[column]}")
        stale = documented.keys() - {column for column, _ in columns[table]}
        problems.extend(f"{table}.{column} is documented but does not exist" for column in stale)
    assert not problems, "docs/sql.md is out of date:\n" + "\n".join(problems)


# -- links and the CLI's synopses -----------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(page: Path) -> str:
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.*)$", _prose(page), flags=re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_links_between_pages_reach_a_file_and_heading() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _cli_options() -> dict[str, set[str]]:
    """Every `lmg` command's option names, as `lmg COMMAND --help` lists them."""
    ctx = click.Context(lmg)
    commands = {name: lmg.get_command(ctx, name) for name in lmg.list_commands(ctx)}
    return {
        name: {opt for p in c.params for opt in [*p.opts, *p.secondary_opts] if opt[0] == "-"}
        for name, c in commands.items()
        if c is not None and not isinstance(c, click.Group)
    }


def _synopses(page: Path) -> dict[str, str]:
    """The `lmg COMMAND [...]` lines in a page's plain code blocks, with their continuations."""
    blocks: list[list[str]] = []
    language = None  # outside a block
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
            if language == "":
                blocks.append([])
        elif language == "":
            blocks[-1].append(line)
    found: dict[str, str] = {}
    for block in blocks:
        command = None
        for line in block:
            if match := re.match(r"lmg ([a-z]+)\b", line):
                command = match[1]
                found[command] = found.get(command, "") + line
            elif command and re.match(r"\s+\[", line):
                found[command] += line
            else:
                command = None
    return found


def test_cli_synopses_name_each_commands_real_options() -> None:
    options = _cli_options()
    wrong = []
    for page in PAGES:
        for command, synopsis in _synopses(page).items():
            named = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", synopsis))
            wrong += [f"{page.name}: lmg {command} has no {o}" for o in named - options[command]]
    assert not wrong, "\n".join(wrong)


def test_operations_cli_summary_lists_every_option() -> None:
    """docs/operations.md's CLI block is the one place a reader sees every command's options."""
    options = _cli_options()
    missing = []
    for command, synopsis in _synopses(ROOT / "docs" / "operations.md").items():
        named = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", synopsis))
        long = {o for o in options[command] if o.startswith("--") and o != "--output"}
        missing += [f"lmg {command} {o}" for o in sorted(long - named)]
    assert not missing, "docs/operations.md's CLI block lacks:\n" + "\n".join(missing)


def _documented_signatures(heading: str) -> dict[str, str]:
    """`name(params)` of each row of the method table under a docs/projections.md heading."""
    text = (ROOT / "docs" / "projections.md").read_text()
    section = text[text.index(heading) :].split("\n#")[0]
    rows = re.findall(r"^\| `(\w+)\(([^)]*)\)`", section, flags=re.M)
    return {name: params.replace('"', "'") for name, params in rows}  # as repr() quotes


def _params(signature: inspect.Signature) -> str:
    """A signature as the docs write it: names, `*`, `/` and defaults, no annotations."""
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=inspect.Signature.empty))[1:-1]


EMBEDDED_ONLY = {"get_nodes_batch", "stats", "render", "cursor"}
"""Reads docs/service.md says stay embedded-only."""


@pytest.mark.parametrize("graph", ["embedded", "served"])
@pytest.mark.parametrize(
    ("heading", "of"),
    [("| method | returns | example |", "graph"), ("### The query builder", "query")],
    ids=["MemoryGraph", "Query"],
)
def test_read_api_tables_give_each_methods_real_signature(
    heading: str, of: str, graph: str
) -> None:
    """What `help(g.get_node)` shows is what docs/projections.md says, keywords included, for
    `MemoryGraph.open` and `MemoryGraph.connect` alike (a client needs no service to exist)."""
    documented = _documented_signatures(heading)
    assert len(documented) > 5
    opened: contextlib.AbstractContextManager[Any]
    if graph == "embedded":
        opened = MemoryGraph.open(tempfile.mkdtemp(), durability=eventlog.Durability.NONE)
    else:
        opened = MemoryGraph.connect("http://127.0.0.1:9")  # never asked anything
        documented = {k: v for k, v in documented.items() if k not in EMBEDDED_ONLY}
    with opened as g:
        target = g if of == "graph" else g.query()
        wrong = [
            f"{name}({params}): it is {name}({_params(inspect.signature(getattr(target, name)))})"
            for name, params in documented.items()
            if _params(inspect.signature(getattr(target, name))) != params
        ]
    assert not wrong, f"docs/projections.md ({graph}):\n" + "\n".join(wrong)


def test_event_helpers_are_documented_with_their_real_parameters(tmp_path: Path) -> None:
    """docs/events.md's `helper(params)` name each parameter as `help(log.helper)` shows it, in
    order, with its default (the page leaves out `*` and the append options, `**opts`)."""
    text = (ROOT / "docs" / "events.md").read_text()
    wrong = []
    with eventlog.open(tmp_path / "store") as log:
        for name, params in re.findall(r"`([a-z_]+)\(([^`]*)\)`", text):
            if "[" in params or name == "help":  # a batch helper's rows; help(log.helper)
                continue
            shown = inspect.signature(getattr(log, name)).parameters.values()
            plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
            real = [
                str(p.replace(annotation=inspect.Parameter.empty, kind=plain))
                for p in shown
                if p.kind != p.VAR_KEYWORD
            ]
            documented = [x.strip().replace('"', "'") for x in params.split(",") if x.strip()]
            if documented[-1] == "...":
                documented, real = documented[:-1], real[: len(documented) - 1]
            if documented != real:
                wrong.append(f"{name}({params}): it is {name}({', '.join(real)})")
    assert not wrong, "docs/events.md:\n" + "\n".join(wrong)


# -- the examples that need `lmg serve` ----------------------------------------------------------


def served_examples() -> list[tuple[str, str]]:
    """Code blocks that talk to `lmg serve` at its documented address (README's `py` blocks)."""
    found = []
    for page in PAGES:
        blocks = re.findall(r"```(?:py|python)\n(.*?)```", page.read_text(), flags=re.S)
        found += [(page.name, code) for code in blocks if "http://127.0.0.1:8420" in code]
    return found


@pytest.mark.slow
def test_code_written_against_lmg_serve_runs_against_it(tmp_path: Path) -> None:
    """README's `MemoryGraph.connect` block and service.md's `eventlog.connect` block, run as
    printed against `lmg serve` (on a free port instead of 8420) on the demo's store."""
    examples = served_examples()
    assert {name for name, _ in examples} >= {"README.md", "service.md"}
    store = tmp_path / "lmg-data"
    shell(f"{BIN}/lmg demo {store}", tmp_path, FRESH_SHELL)
    service = Service(tmp_path, [str(store)])
    try:
        for name, code in examples:
            result = subprocess.run(
                [sys.executable, "-c", code.replace("http://127.0.0.1:8420", service.url)],
                cwd=tmp_path,
                env={k: v for k, v in os.environ.items() if k != "LMG_TOKEN"},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{name}:\n{code}\n{result.stderr}"
            assert result.stdout.strip(), f"{name} printed nothing"
    finally:
        assert service.stop() == 0
