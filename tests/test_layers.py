"""The import contract (issue 14): relay's packages form layers, and every import points down.

A unit is a top-level module (relay/config.py) or package (relay/verify/). Imports are read from
the source (every `import`, including those under TYPE_CHECKING and inside functions: each is a
dependency), not by importing anything. A unit may import units of its own layer or below, and
the units together import without a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

RELAY = Path(__file__).parent.parent / "relay"

# Bottom first.
LAYERS: list[set[str]] = [
    # Vocabulary and helpers every package shares; `relay` itself holds only __version__.
    {"core", "relay"},
    # Foundations: the registry file, logging and metrics; the input record
    # (aggregate.observation) and its aggregation.
    {"registry", "logs", "metrics"},
    {"aggregate"},
    {"privacy"},
    # Signatures, Merkle trees and signed batches: a batch header states the privacy parameters
    # and the window's counts.
    {"attest"},
    # Configuration and what the pipeline's stages are built from.
    {"config", "wal"},
    {"ingest"},
    {"sinks"},
    {"verify"},
    # Stages.
    {"outbox"},
    {"seal"},
    {"backpressure"},
    # The operator relay, then the programs that run relays and read their output.
    {"serve"},
    {"lead", "witness", "bench"},
    # Generators of the published schemas and the configuration reference: they gather from all
    # (the lead's answers included).
    {"schemagen", "configdoc"},
    {"cli", "__main__"},
]

# Imports that still break the contract, each to be removed (issue 14); the test fails when one
# of them is gone, so that this list only shrinks.
KNOWN: dict[tuple[str, str], str] = {}


def _module(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "relay"


def _imports() -> Iterator[tuple[str, str]]:
    """(importing module, imported module) for every import of relay in relay's code."""
    for path in sorted(RELAY.rglob("*.py")):
        module = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{module}: relative import"
                names = [node.module or ""]
            else:
                continue
            yield from ((module, name) for name in names if name.split(".")[0] == "relay")


def _layer(unit: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if unit in layer]
    assert len(found) == 1, f"{unit} is in {len(found)} layers"
    return found[0]


def test_every_unit_has_one_layer() -> None:
    units = {_unit(_module(path)) for path in RELAY.rglob("*.py")}
    for unit in units:
        _layer(unit)
    assert set().union(*LAYERS) == units


def test_imports_point_down() -> None:
    upward = {
        (importer, imported)
        for importer, imported in _imports()
        if _layer(_unit(imported)) > _layer(_unit(importer))
    }
    assert sorted(upward - KNOWN.keys()) == []
    assert sorted(KNOWN.keys() - upward) == [], "no longer imported: remove from KNOWN"


def test_core_imports_nothing_else_of_relay() -> None:
    assert [(a, b) for a, b in _imports() if _unit(a) == "core" and _unit(b) != "core"] == []


def test_units_import_without_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for importer, imported in _imports():
        if (importer, imported) not in KNOWN and _unit(importer) != _unit(imported):
            graph.setdefault(_unit(importer), set()).add(_unit(imported))
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        assert unit not in path, f"import cycle: {' -> '.join([*path, unit])}"
        if unit not in done:
            for imported in sorted(graph.get(unit, ())):
                visit(imported, [*path, unit])
            done.add(unit)

    for unit in sorted(graph):
        visit(unit, [])
