"""suite/data/output_dir.py, in process: a folder FlowIO did not write is
refused untouched, --overwrite replaces only FlowIO's files, an edited report
deletes nothing else, a run killed while swapping files is recognised, and a
second run into a locked folder touches nothing."""
import json
import os

import pytest

from helpers import make_tree
from suite.data import contract, convert, output_dir
from suite.plumbing import errors


USER_FILES = {"train-imagenet-00000-of-01024.tfrecord": b"someone's shard",
              "validation-coco.tfrecord": b"another", "notes.txt": b"mine"}


def write_files(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def contents(folder):
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))}


def test_a_folder_flowio_did_not_write_is_refused_untouched(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    write_files(out, dict(USER_FILES, **{"labels.txt": b"0:hand-written\n"}))
    with pytest.raises(errors.UserError, match="not FlowIO.py's output.*--overwrite"):
        convert.convert(image_dir, out, workers=1)
    assert sorted(os.listdir(out)) == sorted(list(USER_FILES) + ["labels.txt"])  # not even a lock


def test_overwrite_replaces_only_the_files_flowio_writes(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    write_files(out, USER_FILES)
    convert.convert(image_dir, out, workers=1, overwrite=True)
    after = contents(out)
    assert {name: after[name] for name in USER_FILES} == USER_FILES
    # From now on the folder is FlowIO's: a re-run needs no --overwrite, and
    # removes its own older shards but still nothing of the user's.
    convert.convert(image_dir, out, workers=1, num_shards=2)
    info = contract.load_dataset_info(out)
    assert sorted(os.listdir(out)) == sorted(
        list(USER_FILES) + [output_dir.LOCK_FILE, "labels.txt", "dataset.json"]
        + info["shards"]["train"] + info["shards"]["validation"])


def test_an_edited_report_cannot_make_flowio_delete_other_files(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    convert.convert(image_dir, out, workers=1)
    write_files(str(tmp_path), {"victim.txt": b"keep me"})
    report = os.path.join(out, contract.DATASET_FILE)
    info = contract.load_dataset_info(out)
    info["shards"]["train"].append("../victim.txt")
    with open(report, "w", encoding="utf-8") as f:
        json.dump(info, f)
    with pytest.raises(errors.UserError, match="dataset.json is not a FlowIO.py report"):
        convert.convert(image_dir, out, workers=1)
    convert.convert(image_dir, out, workers=1, overwrite=True)
    assert (tmp_path / "victim.txt").read_bytes() == b"keep me"


def test_a_run_killed_while_swapping_files_is_still_recognised(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    convert.convert(image_dir, out, workers=1, num_shards=2)
    old = contract.load_dataset_info(out)["shards"]
    # What a run killed between its first and last rename leaves: the journal,
    # no dataset.json.
    with open(os.path.join(out, output_dir.JOURNAL_FILE), "w", encoding="utf-8") as f:
        json.dump({"files": sorted(old["train"] + old["validation"]
                                   + ["labels.txt", "dataset.json"])}, f)
    os.remove(os.path.join(out, contract.DATASET_FILE))
    convert.convert(image_dir, out, workers=1, num_shards=1)
    info = contract.load_dataset_info(out)
    assert sorted(os.listdir(out)) == sorted(
        [output_dir.LOCK_FILE, "labels.txt", "dataset.json"]
        + info["shards"]["train"] + info["shards"]["validation"])


def test_a_second_run_into_a_locked_folder_is_refused_and_touches_nothing(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, ".flowio-tmp-live"))  # the running one's temporary folder
    # The lock a running FlowIO holds: flock() on another open file of the
    # same path conflicts even within one process.
    with output_dir.lock(out):
        with pytest.raises(errors.UserError,
                           match=f"FlowIO.py \\(pid {os.getpid()}\\) is writing"):
            convert.convert(image_dir, out, workers=1)
        assert os.path.isdir(os.path.join(out, ".flowio-tmp-live"))
    # Once it has ended, its leftovers are a dead run's, and removed.
    convert.convert(image_dir, out, workers=1)
    assert not os.path.exists(os.path.join(out, ".flowio-tmp-live"))


def test_a_lock_file_planted_as_a_link_is_refused_in_one_line_naming_it(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    write_files(str(tmp_path), {"victim.txt": b"keep me"})
    os.makedirs(out)
    os.symlink(tmp_path / "victim.txt", os.path.join(out, output_dir.LOCK_FILE))
    with pytest.raises(errors.UserError) as error:
        convert.convert(image_dir, out, workers=1)
    lock = os.path.join(out, output_dir.LOCK_FILE)
    assert str(error.value) == (f"{lock} is a symbolic link, which FlowIO.py does not write "
                                f"through (nothing was written): remove it and run again")
    assert (tmp_path / "victim.txt").read_bytes() == b"keep me"
    assert os.listdir(out) == [output_dir.LOCK_FILE]


def test_links_planted_under_the_names_flowio_writes_are_replaced_never_written_through(
        tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    os.makedirs(out)
    planted = ["labels.txt", "dataset.json", "train-00000-of-00001.tfrecord",
               "validation-00000-of-00001.tfrecord", output_dir.JOURNAL_FILE]
    for index, name in enumerate(planted):
        write_files(str(tmp_path), {f"victim{index}": b"keep me"})
        os.symlink(tmp_path / f"victim{index}", os.path.join(out, name))
    convert.convert(image_dir, out, workers=1, num_shards=1, overwrite=True)
    for index, name in enumerate(planted):
        assert (tmp_path / f"victim{index}").read_bytes() == b"keep me"
        assert not os.path.islink(os.path.join(out, name))
    assert not os.path.exists(os.path.join(out, output_dir.JOURNAL_FILE))
    assert contract.load_dataset_info(out)["num_examples"] == {"train": 4, "validation": 2}
