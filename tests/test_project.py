"""Project-level checks: the conda environment matches pyproject.toml."""

import re
import tomllib

from servebench import paths


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    text = (paths.ROOT / "environment.yml").read_text().split("- pip:")[1]
    pip_section = re.findall(r"^\s+- ([A-Za-z][\w.-]*(?:\[[\w,-]+\])?[<>=!~][^\s#]*)", text, re.M)
    assert sorted(pip_section) == sorted(wanted)
    assert names(pip_section) == names(wanted)
    assert re.search(r"^\s+- -e \.$", text, re.M), "environment.yml must install this project"
