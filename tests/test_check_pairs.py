"""The pairing check must pass on the real chapters and fail on a broken pair."""

import importlib.util
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_pairs", ROOT / "scripts" / "check_pairs.py")
check_pairs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_pairs)


def _write_pair(folder: Path, md_code: str, nb_code: str) -> None:
    for code, ext, fmt in ((md_code, "md", "md:myst"), (nb_code, "ipynb", "ipynb")):
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell(code)]
        )
        jupytext.write(notebook, folder / f"01_x.{ext}", fmt=fmt)


def test_repository_chapters_are_paired():
    assert check_pairs.pair_problems(ROOT / "book" / "chapters") == []


def test_identical_pair_passes(tmp_path):
    _write_pair(tmp_path, "x = 1", "x = 1")
    assert check_pairs.pair_problems(tmp_path) == []


def test_edited_source_is_reported(tmp_path):
    _write_pair(tmp_path, "x = 2", "x = 1")
    assert check_pairs.pair_problems(tmp_path) == ["01_x: cell 1 differs (code: 'x = 2'...)"]
    assert check_pairs.main(["check_pairs", str(tmp_path)]) == 1


def test_missing_partner_is_reported(tmp_path):
    _write_pair(tmp_path, "x = 1", "x = 1")
    (tmp_path / "01_x.ipynb").unlink()
    assert check_pairs.pair_problems(tmp_path) == ["01_x: 01_x.ipynb is missing"]
