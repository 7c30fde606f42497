"""The `lmg` command: every package's commands under one group.

It lives here because `replay` is the top of the import chain (it may import both other
packages), so the CLI can gather commands from all of them without an upward import.
"""

from __future__ import annotations

import click

from eventlog.cli import commands as eventlog_commands
from projections.cli import commands as projections_commands

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-memory-graph")
def main() -> None:
    """llm-memory-graph: the memory and lineage store for LLM agents.

    Every command takes a STORE directory, defaulting to $LMG_STORE or ./lmg-data.
    """


for command in [*eventlog_commands, *projections_commands]:
    main.add_command(command)


if __name__ == "__main__":
    main()
