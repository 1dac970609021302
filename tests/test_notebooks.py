"""Static checks on the notebook series (nbmake executes them; see the README)."""

import json
import re

import pytest

from servebench import paths

NOTEBOOKS = sorted((paths.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Ways a cell could write a file; allowed only when the line names results/.
WRITES = re.compile(
    r"open\([^)]*['\"][wa]b?['\"]|\.to_(csv|parquet|json)\(|savefig\(|write_(text|bytes)\("
)


def cells(path):
    return json.loads(path.read_text())["cells"]


def test_the_series_is_numbered_one_to_nine():
    expected = ["01", "02", "03", "04", "05", "06", "07", "08", "09"]
    assert [p.name[:2] for p in NOTEBOOKS] == expected


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_says_what_you_will_learn_and_need(path):
    first = cells(path)[0]
    text = "".join(first["source"])
    assert first["cell_type"] == "markdown"
    assert "You will learn" in text and "You need" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_last_cell_has_exercises(path):
    last = cells(path)[-1]
    assert last["cell_type"] == "markdown" and "## Try it" in "".join(last["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_errors(path):
    for cell in cells(path):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    """Readers run these: no figure from another machine, and clean diffs."""
    for cell in cells(path):
        assert not cell.get("outputs") and not cell.get("execution_count"), cell["source"][:1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_published_executed_copy_is_of_this_notebook(path):
    """docs/executed/ holds a full run of exactly this code, its machine named on top."""
    published = paths.ROOT / "docs" / "executed" / path.name
    assert published.exists(), f"no executed copy of {path.name}: run `make docs`"
    header, *rest = cells(published)
    assert "Executed copy" in "".join(header["source"]) and "CPU cores" in "".join(header["source"])

    def code(cells_):
        return ["".join(c["source"]) for c in cells_ if c["cell_type"] == "code"]

    assert code(rest) == code(cells(path)), f"{path.name} changed since: run `make docs`"
    for cell in rest:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_writes_outside_results(path):
    for cell in cells(path):
        for line in "".join(cell["source"]).splitlines():
            if WRITES.search(line):
                assert "results" in line, line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_server_started_is_stopped(path):
    source = "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "code")
    started = re.findall(r"^(\w+) = helpers\.start_server\(", source, re.M)
    for name in set(started):
        assert f"{name}.stop()" in source, name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_short_and_print_at_most_a_short_verdict(path):
    """Longer code lives in the package; prose lives in markdown."""
    for cell in cells(path):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert len(source.splitlines()) <= 15, source
            assert source.count("print(") <= 2, source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_summary_and_exercises_are_apart(path):
    *_, summary, exercises = cells(path)
    assert "## Summary" in "".join(summary["source"]), path.name
    assert "## Summary" not in "".join(exercises["source"]), path.name
