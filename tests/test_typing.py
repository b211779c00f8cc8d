"""Static checks inside the suite, so CI (which runs only pytest) runs them too.

mypy checks labelclean/data and labelclean/fgcm strictly (the settings are in
pyproject.toml's ``[tool.mypy]``); ruff checks lint and formatting. Each failure lists
the tool's own messages.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT_PACKAGES = ("labelclean/data", "labelclean/fgcm")
LINTED = ("labelclean", "tests", "benchmarks", "examples")
FORMATTED = ("labelclean", "examples")  # tests/ and benchmarks/ keep their denser layout


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def _strict_files() -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for pkg in STRICT_PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
    )


def test_data_and_fgcm_pass_mypy_strict(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    _need("mypy")
    # pytest's cache folder keeps mypy's cache between runs: only the first run is slow.
    pytest_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache = pytest_cache.mkdir("mypy") if pytest_cache is not None else tmp_path
    done = _run("mypy", "--cache-dir", str(cache), "--no-error-summary", *_strict_files())
    assert done.returncode in (0, 1), f"mypy did not run:\n{done.stdout}{done.stderr}"
    errors = [line for line in done.stdout.splitlines() if line.strip()]
    assert not errors, "mypy found type errors:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "command", [("check", *LINTED), ("format", "--check", *FORMATTED)], ids=["lint", "format"]
)
def test_ruff(command: tuple[str, ...]) -> None:
    _need("ruff")
    done = _run("ruff", *command)
    assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"
