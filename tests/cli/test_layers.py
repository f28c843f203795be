"""The layers import downwards only (docs/architecture.md, "Layers"), and the CLI starts
without the server side: no FastAPI, uvicorn, APSW, pydantic, httpx or rich for `tandem
version` and `tandem --help`.

Both are read from the code, not timed: the import graph from each module's source, and
which modules a fresh interpreter has loaded after the import or the command.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tandemdb

SRC = Path(tandemdb.__file__).parent

# The parts of tandemdb each part may import (besides itself). Tools (cli, bench, demo,
# testing, local) sit above the services; the SDK and the services never import a tool.
ALLOWED = {
    "common": set(),
    "engine": {"common"},
    "node": {"common", "engine"},
    "controller": {"common", "engine"},
    "gateway": {"common"},
    "faultproxy": {"common"},
    "client": {"common"},
    "etcd_local": {"common"},
    "local": {"common", "etcd_local"},
    "cli": {"common", "client", "local", "etcd_local", "bench", "demo", "__version__"},
}
SERVER_SIDE = ("fastapi", "starlette", "uvicorn", "apsw", "pydantic", "aiohttp")


def part_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(path: Path) -> set[str]:
    """The parts of tandemdb a module imports, at its top or inside a function."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "tandemdb" else \
                [f"tandemdb.{alias.name}" for alias in node.names]
        parts |= {name.split(".")[1] for name in names if name.startswith("tandemdb.")}
    return parts


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_the_layers_below_it(part: str):
    modules = sorted(SRC.glob(f"{part}/**/*.py")) or [SRC / f"{part}.py"]
    upward = {str(m.relative_to(SRC)): sorted(imported_parts(m) - ALLOWED[part] - {part})
              for m in modules}
    assert not {m: p for m, p in upward.items() if p}, "imports above its layer"


def loaded_after(code: str, packages: tuple[str, ...] = SERVER_SIDE) -> list[str]:
    """Which of `packages` a fresh interpreter has loaded after running `code`."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & "
             f"set({list(packages)!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_sdk_and_the_cli_import_no_server_side_package():
    assert loaded_after("import tandemdb.client, tandemdb.client.operations") == []
    assert loaded_after("import tandemdb.cli.main") == []


@pytest.mark.parametrize("argv", [["version"], ["version", "--json"], ["--help"],
                                  ["env", "--help"]])
def test_version_and_help_load_neither_the_server_side_nor_the_sdk_nor_rich(argv: list[str]):
    run = (f"sys.argv = ['tandem', *{argv!r}]\nfrom tandemdb.cli.main import app\n"
           "try:\n    app()\nexcept SystemExit:\n    pass")
    assert loaded_after(run, (*SERVER_SIDE, "httpx", "rich", "markdown_it")) == []
