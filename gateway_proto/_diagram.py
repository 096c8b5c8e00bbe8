"""The connection's state diagram, generated from the transition table in ``_state.py``.

:func:`state_diagram` renders :func:`gateway_proto._state.table` as a Mermaid
``stateDiagram-v2``: one arrow per (from, to) pair, labelled with every trigger that takes
it, an entry arrow into each state nothing leads to, and an exit arrow out of each state
nothing leaves. docs/architecture.md embeds it between two marker comments::

    python -m gateway_proto._diagram --write   # regenerate the block in docs/architecture.md
    python -m gateway_proto._diagram --check   # exit 1 when the block is stale
    python -m gateway_proto._diagram           # print the diagram

``tests/test_docs.py`` fails when the block and the table disagree.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._state import ConnectionState, Trigger, table

#: The markers around the generated block in docs/architecture.md.
BEGIN_MARKER = "<!-- state-diagram:begin (generated: python -m gateway_proto._diagram --write) -->"
END_MARKER = "<!-- state-diagram:end -->"
#: Where the diagram lives in a source checkout.
DEFAULT_DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def state_diagram() -> str:
    """The transition table as Mermaid ``stateDiagram-v2`` text (ends with a newline).

    The order follows the enums' declaration order, so the text changes only when the table
    does.
    """
    transitions = table()
    order = list(ConnectionState)
    edges: dict[tuple[ConnectionState, ConnectionState], list[Trigger]] = {}
    for (source, trigger), target in transitions.items():
        edges.setdefault((source, target), []).append(trigger)
    sources = {source for source, _ in transitions}
    targets = set(transitions.values())
    lines = ["stateDiagram-v2"]
    lines += [f"    [*] --> {state.name}" for state in order if state not in targets]
    for source, target in sorted(
        edges, key=lambda pair: (order.index(pair[0]), order.index(pair[1]))
    ):
        triggers = sorted(edges[source, target], key=list(Trigger).index)
        label = ", ".join(trigger.value for trigger in triggers)
        lines.append(f"    {source.name} --> {target.name}: {label}")
    lines += [f"    {state.name} --> [*]" for state in order if state not in sources]
    return "\n".join(lines) + "\n"


def render_block() -> str:
    """The whole generated block, markers included, as it appears in the document."""
    return f"{BEGIN_MARKER}\n```mermaid\n{state_diagram()}```\n{END_MARKER}"


def embedded_block(text: str) -> str:
    """The block between the markers in ``text``, markers included.

    Raises:
        ValueError: the markers are missing, repeated or out of order.

    """
    begin = text.find(BEGIN_MARKER)
    end = text.find(END_MARKER)
    if begin < 0 or end < begin or text.count(BEGIN_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise ValueError(f"expected exactly one {BEGIN_MARKER!r} ... {END_MARKER!r} block")
    return text[begin : end + len(END_MARKER)]


def rewrite(text: str) -> str:
    """``text`` with its generated block replaced by the current diagram."""
    return text.replace(embedded_block(text), render_block())


def main(argv: Sequence[str] | None = None) -> int:
    """Print the diagram, or check (``--check``) or rewrite (``--write``) the document."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway_proto._diagram",
        description="The connection's state diagram, generated from gateway_proto/_state.py.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the block in the doc")
    action.add_argument("--check", action="store_true", help="exit 1 when the block is stale")
    parser.add_argument("--path", type=Path, default=DEFAULT_DOC, help="the Markdown file")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write(state_diagram())
        return 0
    path: Path = args.path
    try:
        text = path.read_text(encoding="utf-8")
        fresh = rewrite(text)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 2
    if fresh == text:
        return 0
    if args.check:
        sys.stderr.write(
            f"{path}: the state diagram is stale; run python -m gateway_proto._diagram --write\n"
        )
        return 1
    path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
