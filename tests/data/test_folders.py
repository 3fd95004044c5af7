"""suite/data/folders.py: class folders found, stray files and links that
would loop reported, class names that labels.txt cannot hold."""
import os

import pytest

from helpers import NOT_UTF8
from suite.data.folders import class_name_problem, find_files
from suite.images.finding import LINK_TO_ANCESTOR
from suite.plumbing import errors


def image(tree, class_name, name, sha256=None):
    return {"tree": tree, "class_name": class_name, "path": f"/{tree}/{class_name}/{name}",
            "filename": f"{class_name}/{name}", "sha256": sha256 or f"{class_name}/{name}"}


def test_find_files_lists_classes_and_reports_stray_files(tmp_path):
    for path in ("cat/a.png", "cat/deeper/b.png", "dog/c.png", "stray.png", ".hidden/d.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    files, skipped, folders = find_files(str(tmp_path))
    assert folders == ["cat", "dog"]
    assert [(f["class_name"], f["filename"]) for f in files] == [
        ("cat", os.path.join("cat", "a.png")), ("cat", os.path.join("cat", "deeper", "b.png")),
        ("dog", os.path.join("dog", "c.png"))]
    assert {f["tree"] for f in files} == {"train"}
    assert skipped == [{"path": str(tmp_path / "stray.png"), "reason": "not inside a class folder"}]


def test_find_files_without_class_folders_is_a_user_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(errors.UserError, match="no class folders"):
        find_files(str(tmp_path))


@pytest.mark.parametrize("name,problem", [("cats", None), ("猫 咪", None), ("a:b", None),
                                          ("two\nlines", "line break"), ("cr\r", "line break"),
                                          ("sep\u2028", "line break"), ("   ", "blank"),
                                          (NOT_UTF8, "not valid UTF-8")])
def test_class_names_that_labels_txt_cannot_hold(name, problem):
    found = class_name_problem(name)
    assert (found is None) if problem is None else (problem in found)


def test_a_class_folder_that_links_to_the_tree_is_skipped_in_one_entry(tmp_path):
    for path in ("cat/a.png", "dog/b.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    os.symlink(".", tmp_path / "self")        # every image would be in two classes
    os.symlink("..", tmp_path / "above")      # the folder above the tree
    os.symlink("..", tmp_path / "cat" / "up")  # inside a class: the tree again
    files, skipped, folders = find_files(str(tmp_path))
    assert folders == ["cat", "dog"]
    assert [f["path"] for f in files] == [str(tmp_path / "cat/a.png"), str(tmp_path / "dog/b.png")]
    assert sorted(skipped, key=lambda entry: entry["path"]) == [
        {"path": str(tmp_path / name), "reason": LINK_TO_ANCESTOR}
        for name in ("above", os.path.join("cat", "up"), "self")]
