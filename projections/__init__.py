"""DuckDB projections of the event log (not yet built; see the issue "Projections")."""

__all__: list[str] = []
