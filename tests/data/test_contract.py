"""suite/data/contract.py: labels.txt round-trips and refuses a gap."""
import pytest

from suite.data import contract
from suite.plumbing import errors


def test_labels_file_round_trips_and_rejects_a_gap(tmp_path):
    contract.write_labels(str(tmp_path), ["猫", "dog with space"])
    assert contract.read_labels(str(tmp_path / contract.LABELS_FILE)) == ["猫", "dog with space"]
    (tmp_path / contract.LABELS_FILE).write_text("0:a\n2:b\n", encoding="utf-8")
    with pytest.raises(errors.UserError, match="line 2"):
        contract.read_labels(str(tmp_path / contract.LABELS_FILE))
