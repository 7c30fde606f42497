"""The docs and examples are part of the product: their code runs, their reference is complete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog.events import event_types

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


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
