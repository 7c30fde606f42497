"""The docs and examples are part of the product: their code runs, their reference is complete."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventlog
import projections
from eventlog._demo import record_demo
from eventlog.events import event_types
from projections import MemoryGraph

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
SQL_REFERENCE = ROOT / "docs" / "sql.md"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def sql_blocks(page: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize(
    ("page", "index"),
    [(p, i) for p in PAGES for i in range(len(python_blocks(p)))],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
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


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "store")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "an example should show what it did"


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
