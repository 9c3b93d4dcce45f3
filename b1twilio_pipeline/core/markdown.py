"""Markdown tables for Dagster metadata: what the UI shows on an asset's materialization."""

from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(rows: Sequence[Mapping[str, Any]], *, empty: str = "Nothing to show.",
                   limit: int = 200) -> str:
    """A markdown table of the first `limit` rows; columns from the first row."""
    if not rows:
        return empty
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more not shown.")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = f"{value:,.2f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
