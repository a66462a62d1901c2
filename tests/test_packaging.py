"""One list of dependencies: requirements.txt (all a Space installs) is what pyproject.toml
declares, so `pip install bioseg` and a Space get the same packages."""

from __future__ import annotations

import importlib.metadata
import tomllib

from packaging.requirements import Requirement

from tests.conftest import REPO


def listed() -> set[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {str(Requirement(line)) for line in lines if line.strip() and not line.startswith("#")}


def test_pyproject_takes_its_dependencies_from_requirements_txt() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "dependencies" not in project["project"]  # no second list to keep in step
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {
        "file": ["requirements.txt"]
    }


def test_the_installed_package_requires_what_requirements_txt_lists() -> None:
    required = importlib.metadata.requires("bioseg") or []
    installed = {str(Requirement(r)) for r in required if "extra ==" not in r}
    assert installed == listed() and len(installed) >= 10
