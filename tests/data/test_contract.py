"""suite/data/contract.py: labels.txt round-trips and refuses a gap;
dataset.json is checked, not trusted: every way of spoiling it is one line
naming it."""
import json
import os
import shutil

import pytest

from suite.data import contract
from suite.plumbing import errors


def test_labels_file_round_trips_and_rejects_a_gap(tmp_path):
    contract.write_labels(str(tmp_path), ["猫", "dog with space"])
    assert contract.read_labels(str(tmp_path / contract.LABELS_FILE)) == ["猫", "dog with space"]
    (tmp_path / contract.LABELS_FILE).write_text("0:a\n2:b\n", encoding="utf-8")
    with pytest.raises(errors.UserError, match="line 2"):
        contract.read_labels(str(tmp_path / contract.LABELS_FILE))


# ---------------------------------------------------------------------------
# dataset.json is checked, not trusted
# ---------------------------------------------------------------------------
def copy_of(data_dir, tmp_path):
    copy = str(tmp_path / "records")
    shutil.copytree(data_dir, copy)
    return copy


def edit_report(data_dir, edit):
    path = os.path.join(data_dir, contract.DATASET_FILE)
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    edit(info)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f)


def swap_first_two(names):
    names[0], names[1] = names[1], names[0]


def rename_class(info):
    old = info["classes"][0]
    info["classes"][0] = "Bag"
    info["counts"]["Bag"] = info["counts"].pop(old)


def shard_outside(info, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "train-00000-of-00001.tfrecord").write_bytes(b"")
    info["shards"]["train"][0] = "../other/train-00000-of-00001.tfrecord"


def shard_link_outside(info, tmp_path):
    os.remove(os.path.join(str(tmp_path / "records"), info["shards"]["train"][0]))
    (tmp_path / "elsewhere").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere", tmp_path / "records" / info["shards"]["train"][0])


def more_records(info):
    info["num_examples"]["train"] += 100000  # "counts" no longer add up


# Each: how dataset.json (or labels.txt) is spoiled, and what the one line says.
SPOILED = {
    "not_json": (lambda info, tmp: None, "is not valid JSON"),
    "not_utf8": (lambda info, tmp: None, "is not valid JSON"),
    "not_an_object": (lambda info, tmp: None, "not a JSON object"),
    "missing_key": (lambda info, tmp: info.pop("num_examples"), 'lacks "num_examples"'),
    "count_is_text": (lambda info, tmp: info["num_examples"].update(train="18"),
                      '"num_examples" is not'),
    "negative_count": (lambda info, tmp: info["counts"][info["classes"][0]].update(train=-1),
                       '"counts" is not'),
    "counts_disagree": (lambda info, tmp: more_records(info),
                        "lists 100018 train records but \"counts\" add up to 18"),
    "classes_not_a_list": (lambda info, tmp: info.update(classes="blue,green,red"),
                           '"classes" is not a list'),
    "shards_not_names": (lambda info, tmp: info["shards"].update(train=[3]), '"shards" is not'),
    "class_renamed": (lambda info, tmp: rename_class(info), "class 0 is 'Bag' but 'blue'"),
    "classes_swapped": (lambda info, tmp: swap_first_two(info["classes"]),
                        "class 0 is 'green' but 'blue'"),
    "labels_missing": (lambda info, tmp: os.remove(tmp / "records" / "labels.txt"),
                       "labels.txt is missing"),
    "shard_outside": (shard_outside, "'../other/train-00000-of-00001.tfrecord' is not a file "
                                     "inside"),
    "shard_absolute": (lambda info, tmp: info["shards"]["train"].append("/etc/passwd"),
                       "'/etc/passwd' is not a file inside"),
    "shard_link_outside": (shard_link_outside, "resolves to"),
}


@pytest.mark.parametrize("case", sorted(SPOILED))
def test_a_spoiled_dataset_json_is_one_line_naming_it(small_data, tmp_path, case):
    data_dir = copy_of(small_data, tmp_path)
    path = os.path.join(data_dir, contract.DATASET_FILE)
    spoil, expected = SPOILED[case]
    if case == "not_json":
        with open(path, "a", encoding="utf-8") as f:
            f.write("}{")
    elif case == "not_utf8":
        with open(path, "rb+") as f:
            f.write(b"\xff")
    elif case == "not_an_object":
        with open(path, "w", encoding="utf-8") as f:
            json.dump([1, 2], f)
    else:
        edit_report(data_dir, lambda info: spoil(info, tmp_path))
    with pytest.raises(errors.UserError) as error:
        contract.load_dataset_info(data_dir)
    message = str(error.value)
    assert "\n" not in message and path in message and "re-run FlowIO.py" in message, message
    assert expected in message, message


def test_a_sound_dataset_json_loads_and_a_shard_may_be_a_link_inside_the_folder(small_data,
                                                                                tmp_path):
    data_dir = copy_of(small_data, tmp_path)
    info = contract.load_dataset_info(data_dir)
    # A shard kept in a sub-folder of the data folder, linked: still inside.
    os.makedirs(os.path.join(data_dir, "kept"))
    name = info["shards"]["train"][0]
    os.rename(os.path.join(data_dir, name), os.path.join(data_dir, "kept", name))
    os.symlink(os.path.join("kept", name), os.path.join(data_dir, name))
    assert contract.load_dataset_info(data_dir) == info


def test_labels_txt_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / contract.LABELS_FILE).write_bytes(b"0:caf\xe9\n")
    with pytest.raises(errors.UserError, match="cannot read .*labels.txt as UTF-8"):
        contract.read_labels(str(tmp_path / contract.LABELS_FILE))
