"""The package keeps its four layers (core, engines, ros, tools) with no import pointing up, no import cycle
and no module borrowing from the command line; docs/architecture.md shows the real import graph."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zeroseg_ros.tools import import_graph
from zeroseg_ros.tools.import_graph import PACKAGE, cycles, layer_violations, mermaid, read_imports

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_sits_in_a_layer() -> None:
    outside = [
        m
        for m in import_graph.module_names(ROOT)
        if m != PACKAGE and import_graph.layer_of(m) not in import_graph.LAYERS
    ]
    assert outside == []


def test_no_import_points_up_or_borrows_from_the_command_line() -> None:
    assert layer_violations(read_imports(ROOT)) == []


def test_no_import_cycles() -> None:
    assert cycles(read_imports(ROOT)) == []


def test_the_reader_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    for folder in ("core", "ros"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "ros" / "node.py").write_text("X = 1\n")
    (package / "core" / "a.py").write_text("def f():\n    from ..ros import node\n    return node\n")
    (package / "core" / "b.py").write_text("import zeroseg_ros.core.a\n")
    found = {(i.importer, i.imported) for i in read_imports(tmp_path)}
    assert (f"{PACKAGE}.core.a", f"{PACKAGE}.ros.node") in found
    assert (f"{PACKAGE}.core.b", f"{PACKAGE}.core.a") in found


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def plant(root: Path, module: str, code: str) -> None:
    path = root / PACKAGE / module
    path.write_text(path.read_text() + "\n\n" + code)


def test_a_planted_upward_import_inside_a_function_fails(package_copy: Path) -> None:
    plant(package_copy, "core/pamr.py", "def _planted():\n    from zeroseg_ros.ros.node import main\n    return main\n")
    problems = layer_violations(read_imports(package_copy))
    assert len(problems) == 1 and "zeroseg_ros.core.pamr" in problems[0] and "zeroseg_ros.ros.node" in problems[0]


def test_a_planted_engines_to_ros_import_fails(package_copy: Path) -> None:
    plant(package_copy, "engines/runners.py", "from zeroseg_ros.ros import params  # noqa\n")
    assert len(layer_violations(read_imports(package_copy))) == 1


def test_a_planted_import_of_the_command_line_fails(package_copy: Path) -> None:
    plant(package_copy, "tools/run_demo.py", "from zeroseg_ros.tools.cli import build_parser  # noqa\n")
    (problem,) = layer_violations(read_imports(package_copy))
    assert "command line" in problem


def test_a_planted_cycle_fails(package_copy: Path) -> None:
    plant(package_copy, "core/config.py", "def _planted():\n    from zeroseg_ros.core import segmenter\n")
    found = cycles(read_imports(package_copy))
    assert any({f"{PACKAGE}.core.config", f"{PACKAGE}.core.segmenter"} <= set(group) for group in found)
    assert layer_violations(read_imports(package_copy)) == []  # a cycle inside one layer is still caught


def fenced_blocks(markdown: str) -> list[str]:
    """Each fenced block of ``markdown``, fences included; fails on a fence that is never closed."""
    blocks: list[str] = []
    block: list[str] | None = None
    for line in markdown.splitlines():
        if block is None and line.startswith("```"):
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "```":
                blocks.append("\n".join(block))
                block = None
    assert block is None, f"a fence opened by {block[0]!r} is never closed" if block else ""
    return blocks


def test_architecture_doc_shows_the_real_import_graph() -> None:
    blocks = fenced_blocks((ROOT / "docs" / "architecture.md").read_text())
    graphs = [block for block in blocks if block.startswith("```mermaid")]
    assert graphs == [mermaid(read_imports(ROOT))], (
        "docs/architecture.md must hold one Mermaid graph, the output of `python -m zeroseg_ros.tools.import_graph`"
    )


def test_fenced_blocks_are_found_whole_and_an_open_fence_fails() -> None:
    text = "intro\n```mermaid\nflowchart BT\n```\nbetween\n```python\nx = 1\n```\n"
    assert fenced_blocks(text) == ["```mermaid\nflowchart BT\n```", "```python\nx = 1\n```"]
    assert fenced_blocks("```mermaid\n```mermaid\nflowchart BT\n```\n") == ["```mermaid\n```mermaid\nflowchart BT\n```"]
    with pytest.raises(AssertionError, match="never closed"):
        fenced_blocks("```mermaid\nflowchart BT\n")
