"""Time-travel replay of the projections (not yet built; see the issue "Time-travel replay").

For now this package holds the `lmg` CLI entry point, which gathers every package's commands.
"""

__all__: list[str] = []
