"""The distribution installs as one `chatledger` namespace and the core never needs AutoGen."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("chatledger-*.whl"))


def test_wheel_has_only_the_chatledger_namespace(wheel: Path) -> None:
    """The wheel puts nothing in site-packages but chatledger/ and its dist-info (no generic top-level names)."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"chatledger", next(t for t in tops if t.endswith(".dist-info"))}
    for pkg in ("store", "projections", "adapters"):
        assert f"chatledger/{pkg}/__init__.py" in names
        assert f"chatledger/{pkg}/py.typed" in names


def test_wheel_installs_and_imports_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    """Installed in a new virtual environment, the three packages import from that environment."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    deps = sysconfig.get_paths()["purelib"]  # the dependencies of this test environment, not chatledger
    code = "import chatledger.store, chatledger.projections, chatledger.adapters, sys;print(chatledger.store.__file__)"
    out = subprocess.run(
        [str(py), "-c", code], env={"PYTHONPATH": deps}, check=True, capture_output=True, text=True
    ).stdout
    assert str(env_dir) in out


def test_core_imports_without_autogen() -> None:
    """chatledger.store and chatledger.projections import with every autogen module blocked."""
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'autogen', 'autogen_agentchat', 'autogen_core', 'autogen_ext'}:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import chatledger.store, chatledger.projections
from chatledger.store import open_store
s = open_store('memory://'); c = s.start_conversation(); s.append(c, [{'role': 'user', 'content': 'x'}])
assert not [m for m in sys.modules if m.startswith('autogen')]
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_subpackage_is_declared() -> None:
    """Every folder with an __init__.py under store/, projections/ and adapters/ ships in the wheel."""
    import tomllib

    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "chatledger." + ".".join(init.parent.relative_to(REPO).parts)
        for top in ("store", "projections", "adapters")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found - declared == set(), "add these to [tool.setuptools] packages in pyproject.toml"
