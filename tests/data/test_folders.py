"""suite/data/folders.py: class folders found, stray files and links that
would loop reported, class names that labels.txt cannot hold, and the files
an --exclude list leaves out."""
import os

import pytest

from helpers import NOT_UTF8, make_tree, no_hang
from suite.data import folders
from suite.data.folders import class_name_problem, find_files
from suite.images.finding import LINK_TO_ANCESTOR
from suite.plumbing import errors
from suite.plumbing.errors import UserError


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


def test_an_exclude_list_is_a_csv_with_a_file_column_or_one_path_a_line(tmp_path):
    misclassified = tmp_path / "misclassified.csv"
    misclassified.write_text("file,true,predicted,probability\n"
                             "/data/cat/1.png,cat,dog,0.9\n\"/data/a, b.png\",dog,cat,0.8\n")
    assert folders.read_exclude_list(misclassified) == ["/data/cat/1.png", "/data/a, b.png"]
    audit = tmp_path / "audit.csv"
    audit.write_text("rank,path,suggested\n1,cat/1.png,dog\n")
    assert folders.read_exclude_list(audit) == ["cat/1.png"]
    plain = tmp_path / "list.txt"
    plain.write_text("# wrong folder\ncat/1.png\n\n  dog/a, b.png  \n")
    assert folders.read_exclude_list(plain) == ["cat/1.png", "dog/a, b.png"]
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00garbage")
    os.mkfifo(tmp_path / "pipe")
    for path, words in ((tmp_path / "missing.csv", "No such file"),
                        (tmp_path / "binary", "not UTF-8 text"),
                        (tmp_path, "a folder, not a file"),
                        (tmp_path / "pipe", "a named pipe, not a file")):
        with no_hang(), pytest.raises(UserError, match=f"--exclude .*cannot read it \\({words}"):
            folders.read_exclude_list(path)


def test_exclude_files_matches_paths_as_given_or_relative_to_the_trees(tmp_path, monkeypatch):
    image_dir = make_tree(str(tmp_path / "images"))
    files, _, _ = folders.find_files(image_dir)
    monkeypatch.chdir(tmp_path)
    listed = [os.path.join(image_dir, "cat", "0.png"),  # absolute
              "dog/1.png",                               # relative to --image_dir
              os.path.join("images", "dog", "2.png"),    # relative to the current folder
              "cat/9.png", "dog/1.png"]                  # no such image; listed twice
    kept, excluded, unmatched = folders.exclude_files(files, listed, image_dir)
    assert sorted(os.path.relpath(p, image_dir) for p in excluded) == [
        "cat/0.png", "dog/1.png", "dog/2.png"]
    assert len(kept) == len(files) - 3 and unmatched == ["cat/9.png"]
