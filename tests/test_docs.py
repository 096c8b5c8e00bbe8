"""docs/ is the reference the code cites: every citation must resolve inside the repository.

* The state diagram in docs/architecture.md is the one generated from the transition table.
* Every ``docs/protocol.md §N`` (and ``§15 item N``), ``docs/architecture.md §N`` and
  ``docs/field-bugs.md #N`` in the code, tests, fuzzers, benchmarks, examples, README and the
  docs themselves names a section or item that exists.
* No file points outside the repository for its references. The one exception is the
  conformance data some tests read from ``../shared/data`` (skipped when it is absent).
* The tests docs/field-bugs.md names exist.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_proto import _diagram
from gateway_proto._state import ConnectionState, Trigger, table

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PROTOCOL = DOCS / "protocol.md"
ARCHITECTURE = DOCS / "architecture.md"
FIELD_BUGS = DOCS / "field-bugs.md"

#: Where citations are checked (folders walked, plus single files).
CITING = ["gateway_proto", "adapters", "tests", "fuzz", "bench", "examples", "docs", "README.md"]
#: Folders never scanned: environments, caches and build output.
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "htmlcov",
}

_SECTION = r"§(\d+(?:\.\d+)*)(?:\s+items?\s+(\d+(?:\s*(?:,|and)\s*\d+)*))?"
#: Between two sections of one citation: "§3, §5", "§4.2/§10.1", "§1.3–§5", "§3 and §5".
_SEPARATOR = r"(?:\s|[,/+–-]|and\b)*"
_SECTION_CITATION = re.compile(
    r"docs/(protocol|architecture)\.md\s+((?:" + _SECTION + r")(?:" + _SEPARATOR + _SECTION + r")*)"
)
_BUG_CITATION = re.compile(r"docs/field-bugs\.md((?:(?:\s|[,/&]|and\b)*#\d+)+)")

#: References to files outside the repository, or to the old names of the docs.
_OUTSIDE = {
    "a path into ../shared other than ../shared/data": re.compile(r"\.\./shared(?!/data\b)"),
    "an absolute /work/ path": re.compile(r"(?<![\w.])/work/"),
    "a 'spec §N' citation (cite docs/protocol.md §N)": re.compile(r"\bspec(?:\s|#)+§"),
    "a 'field notes #N' citation (cite docs/field-bugs.md #N)": re.compile(
        r"\bfield[ -]notes?(?:\s|#)+#?\d+"
    ),
    "a 'DESIGN §N' citation (cite docs/architecture.md §N)": re.compile(r"\bDESIGN(?:\s|#)+§"),
    "a reference to the shared spec, field-notes.md or DESIGN.md": re.compile(
        r"spec/gateway-protocol|field-notes\.md|\bDESIGN\.md"
    ),
}


def _sections(path: Path) -> set[str]:
    """The section numbers of a doc: every heading that starts with ``§N``."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#{1,6}\s+§(\d+(?:\.\d+)*)\b", line)
        if match:
            found.add(match.group(1))
    return found


def _pitfalls() -> set[int]:
    """The numbered items of protocol.md §15."""
    text = PROTOCOL.read_text(encoding="utf-8")
    body = text.split("\n## §15 ", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in re.findall(r"^(\d+)\. ", body, flags=re.MULTILINE)}


def _bugs() -> set[int]:
    """The entry numbers of field-bugs.md (headings ``## N. ...``)."""
    text = FIELD_BUGS.read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE)}


def _repository_files() -> list[Path]:
    """Every text file of the repository: tracked and untracked-but-not-ignored ones."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        if listed.returncode == 0:
            names = [n for n in listed.stdout.decode("utf-8").split("\0") if n]
            return sorted({ROOT / n for n in names if (ROOT / n).is_file()})
    return sorted(_walk(ROOT))


def _walk(top: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            yield Path(folder) / name


def _citing_files() -> list[Path]:
    paths: list[Path] = []
    for name in CITING:
        path = ROOT / name
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            paths += [p for p in _walk(path) if p.suffix in (".py", ".md", ".txt", ".toml")]
    return sorted(paths)


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# -- the generated state diagram ------------------------------------------------------------


def test_state_diagram_in_architecture_md_is_current() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert _diagram.embedded_block(text) == _diagram.render_block(), (
        "docs/architecture.md's state diagram is stale (gateway_proto/_state.py changed): "
        "run  python -m gateway_proto._diagram --write"
    )


def test_state_diagram_draws_every_transition() -> None:
    diagram = _diagram.state_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    arrows = diagram.splitlines()[1:]
    for (source, trigger), target in table().items():
        (arrow,) = [a for a in arrows if a.strip().startswith(f"{source.name} --> {target.name}:")]
        assert trigger.value in arrow.split(": ", 1)[1].split(", ")
    assert "    [*] --> IDLE" in arrows
    assert "    CLOSED --> [*]" in arrows
    labels = sum(len(a.split(": ", 1)[1].split(", ")) for a in arrows if ": " in a)
    assert labels == len(table())
    assert {t.value for t in Trigger} >= {t.value for _, t in table()}
    assert all(state.name in diagram for state in ConnectionState)


def test_diagram_command_checks_and_rewrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "architecture.md"
    doc.write_text(
        f"# title\n\n{_diagram.BEGIN_MARKER}\nold\n{_diagram.END_MARKER}\n\nafter\n",
        encoding="utf-8",
    )
    assert _diagram.main(["--check", "--path", str(doc)]) == 1
    assert "python -m gateway_proto._diagram --write" in capsys.readouterr().err
    assert _diagram.main(["--write", "--path", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# title\n\n") and text.endswith("\n\nafter\n")
    assert _diagram.embedded_block(text) == _diagram.render_block()
    assert _diagram.main(["--check", "--path", str(doc)]) == 0
    assert _diagram.main(["--write", "--path", str(doc)]) == 0  # nothing to do
    assert doc.read_text(encoding="utf-8") == text

    assert _diagram.main([]) == 0
    assert capsys.readouterr().out == _diagram.state_diagram()

    doc.write_text("no markers here\n", encoding="utf-8")
    assert _diagram.main(["--check", "--path", str(doc)]) == 2
    assert _diagram.main(["--write", "--path", str(tmp_path / "missing.md")]) == 2
    doc.write_text(f"{_diagram.END_MARKER}\n{_diagram.BEGIN_MARKER}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="exactly one"):
        _diagram.embedded_block(doc.read_text(encoding="utf-8"))


# -- citations resolve ----------------------------------------------------------------------


def test_docs_have_the_cited_numbering() -> None:
    assert {"0", "1", "1.1", "1.2", "1.3", "2", "3", "4", "4.1", "4.2", "5", "6", "7"} <= (
        _sections(PROTOCOL)
    )
    assert {"8", "9", "10", "10.1", "10.2", "10.3", "10.4", "11", "12", "13", "14", "15", "16"} <= (
        _sections(PROTOCOL)
    )
    assert _pitfalls() == set(range(1, 21))
    assert {str(n) for n in range(1, 8)} <= _sections(ARCHITECTURE)
    assert _bugs() == set(range(1, 21))


def test_every_citation_names_an_existing_section_or_item() -> None:
    sections = {"protocol": _sections(PROTOCOL), "architecture": _sections(ARCHITECTURE)}
    pitfalls, bugs = _pitfalls(), _bugs()
    problems: list[str] = []
    seen = 0
    for path in _citing_files():
        text = _text(path)
        if text is None:
            continue
        where = path.relative_to(ROOT)
        for match in _SECTION_CITATION.finditer(text):
            doc = match.group(1)
            for section, items in re.findall(_SECTION, match.group(2)):
                seen += 1
                if section not in sections[doc]:
                    problems.append(
                        f"{where}:{_line(text, match.start())}: {doc}.md has no §{section}"
                    )
                for item in re.findall(r"\d+", items):
                    if doc != "protocol" or section != "15" or int(item) not in pitfalls:
                        problems.append(
                            f"{where}:{_line(text, match.start())}: "
                            f"{doc}.md §{section} has no item {item}"
                        )
        for match in _BUG_CITATION.finditer(text):
            for number in re.findall(r"#(\d+)", match.group(1)):
                seen += 1
                if int(number) not in bugs:
                    problems.append(
                        f"{where}:{_line(text, match.start())}: field-bugs.md has no #{number}"
                    )
    assert not problems, "citations that name nothing:\n" + "\n".join(problems)
    assert seen > 100, "the citation pattern no longer finds the code's citations"


def test_no_file_points_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    problems: list[str] = []
    for path in _repository_files():
        if path.resolve() == this:
            continue
        text = _text(path)
        if text is None:
            continue
        for what, pattern in _OUTSIDE.items():
            for match in pattern.finditer(text):
                where = f"{path.relative_to(ROOT)}:{_line(text, match.start())}"
                problems.append(f"{where}: {what}: {match.group(0)!r}")
    assert not problems, "references a fresh clone cannot follow:\n" + "\n".join(problems)


def test_the_tests_field_bugs_md_names_exist() -> None:
    text = FIELD_BUGS.read_text(encoding="utf-8")
    named = re.findall(r"(tests/[\w/]+\.py)::(\w+)", text)
    for path, names in re.findall(r"`(tests/[\w/]+\.py)` \(([^)]*)\)", text):
        named += [(path, name) for name in re.findall(r"`(\w+)`", names)]
    assert len(named) >= 20
    missing = []
    for path, name in named:
        source = (ROOT / path).read_text(encoding="utf-8")
        if not re.search(rf"^\s*(?:async\s+)?def {name}\(", source, flags=re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, "docs/field-bugs.md names tests that do not exist: " + ", ".join(missing)
