"""suite/model/bookkeeping.py: a garbled best.json or validation.json is one
line naming it."""

import pytest

from suite.model import bookkeeping
from suite.plumbing import errors


def test_a_garbled_bookkeeping_file_is_one_line_naming_it(tmp_path):
    (tmp_path / bookkeeping.VALIDATION_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(errors.UserError, match=f"{bookkeeping.VALIDATION_FILE} cannot be read.*"
                                            "delete it"):
        bookkeeping.load_validation(str(tmp_path))
