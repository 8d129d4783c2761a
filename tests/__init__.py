"""The test suite; mirrors the packages (``tests/curate/stages/test_lid.py`` tests ``curate/stages/lid.py``)."""

from pathlib import Path

# The repository root, for the shipped examples and demo data.
ROOT = Path(__file__).resolve().parents[1]
