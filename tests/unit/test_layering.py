"""The architecture's layering holds: Qt only in app/, no network libraries in core/, nothing imports app/.

Checked on the source's import statements (ast), so a violation fails here before it spreads.
"""

import ast
from pathlib import Path

import pytest

from transports import registry

ROOT = Path(__file__).resolve().parents[2]
QT = {"PySide6", "qasync", "pyqtgraph", "shiboken6"}
NETWORK = {"zmq", "socketio", "aiohttp", "engineio", "socket", "ssl"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_is_pure(path):
    roots = imported_roots(path)
    # core.protocol resolves hostnames for validate_uri (iblutil does the same); nothing in core opens a socket.
    allowed = {"socket"} if path.name == "protocol.py" else set()
    assert not (roots & (QT | NETWORK)) - allowed, f"{path.name} imports {roots & (QT | NETWORK)}"
    assert "app" not in roots and "transports" not in roots


@pytest.mark.parametrize("path", sources("transports"), ids=lambda p: str(p.relative_to(ROOT)))
def test_transports_never_import_qt_or_app(path):
    roots = imported_roots(path)
    assert not roots & QT and "app" not in roots


def test_every_transport_has_one_scheme_a_link_and_a_server():
    schemes = [t.scheme for t in registry.TRANSPORTS]
    assert sorted(schemes) == ["rpc", "sio", "tcp", "udp", "zmq"] and len(set(schemes)) == len(schemes)
    for transport in registry.TRANSPORTS:
        assert registry.transport(transport.scheme.upper()) is transport
        assert isinstance(transport.link, type) and callable(transport.serve)
