"""The SQL sandbox in replay (issue 9, item 1): ``lmg replay --sql``, `replay.at(...).sql` and
`rows`, and a `replay.step` walk's view (a connection that keeps folding) refuse every attack
of tests/projections/test_sql_sandbox.py, in one line, and leave both stores unchanged."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import replay
from projections import SqlRefused
from tests._processes import LMG, WAIT_S
from tests.projections.test_sql_sandbox import NAMES, attacks, fingerprint, populate, verified

pytestmark = (
    pytest.mark.slow
)  # real server or CLI processes: `make test` runs them, `make test-fast` not


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sandbox")
    store, other = root / "store", root / "other"
    populate(store)
    populate(other)
    return store, other


@pytest.fixture
def untouched(stores: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    before = fingerprint(*stores)
    yield stores
    assert fingerprint(*stores) == before


@pytest.mark.parametrize("attack", NAMES)
def test_lmg_replay_sql_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    store, other = untouched
    done = subprocess.run(
        [LMG, "replay", str(store), "--at", "1", "--sql", attacks(store, other)[attack]],
        check=False,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode != 0, done.stdout
    errors = [line for line in done.stderr.splitlines() if not line.startswith("at LSN")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("Error: refused"), errors[0]
    assert done.stdout == ""
    assert verified(store)


@pytest.mark.parametrize("attack", NAMES)
def test_replay_view_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    store, other = untouched
    query = attacks(store, other)[attack]
    with replay.at(store, lsn=1) as view:
        with pytest.raises(SqlRefused, match=r"^refused"):
            view.rows(query)
        with pytest.raises(SqlRefused, match=r"^refused"):
            view.sql(query)
        assert view.rows("SELECT count(*) FROM prompts") == [(1,)]


@pytest.mark.parametrize("attack", NAMES)
def test_replay_step_view_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    """A walk's view reads a connection that can write (it folds the next step): the statement
    check and the read-only transaction refuse there, and the workspace is sandboxed."""
    store, other = untouched
    query = attacks(store, other)[attack]
    steps = 0
    for step in replay.step(store):
        with pytest.raises(SqlRefused, match=r"^refused"):
            step.view.rows(query)
        steps += 1
        assert step.view.rows("SELECT count(*) FROM lmg_checkpoints WHERE lsn = ?", [step.lsn])
    assert steps == 3
