"""Fixtures of the data tests."""
from __future__ import annotations

import pytest

import fastrec.data.tables as tables


@pytest.fixture(params=["pandas", "csv module"])
def reader(request, monkeypatch):
    """Run a test with pandas reading the tables, then with the csv-module reader."""
    if request.param == "pandas" and tables.optional_pandas() is None:
        pytest.skip("pandas is not installed")
    if request.param == "csv module":
        monkeypatch.setattr(tables, "optional_pandas", lambda: None)
    return request.param
