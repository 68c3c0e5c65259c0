"""A queries.jsonl whose every line is broken is refused naming each line's problem, not as "no data rows"."""

from __future__ import annotations

import pytest

from collectors.importing import import_custom_queries
from collectors.importing.validation import ImportValidationError


def test_a_file_of_only_broken_lines_names_the_lines(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"id": "a", "question": \n[1, 2]\n')
    with pytest.raises(ImportValidationError) as err:
        import_custom_queries(path)
    msg = str(err.value)
    assert "no data rows" not in msg
    assert "none of the 2 line(s)" in msg and "invalid JSON" in msg and "expected a JSON object" in msg
