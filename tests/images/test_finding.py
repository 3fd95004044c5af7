"""suite/images/finding.py: a folder tree walked to its end whatever its
links: a link to a folder above is reported and not followed, a folder
linked twice is listed once, a link to a folder outside is followed."""
import os

from suite.images import finding


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")


def test_a_link_to_a_folder_above_is_reported_and_the_rest_is_walked(tmp_path):
    touch(str(tmp_path / "tree" / "cats" / "a.jpg"))
    touch(str(tmp_path / "tree" / "cats" / "sub" / "b.jpg"))
    touch(str(tmp_path / "outside" / "c.jpg"))
    cats = tmp_path / "tree" / "cats"
    os.symlink("..", cats / "sub" / "up")                  # cats, which holds it: a loop
    os.symlink(".", cats / "again")                        # its own folder: a loop
    os.symlink("../..", cats / "sub" / "tree")             # above cats: other classes
    os.symlink("sub", cats / "sub_again")                  # listed once
    os.symlink(tmp_path / "outside", cats / "outside")     # followed
    found, unlisted = finding.walk_files(str(cats))
    assert found == sorted(str(cats / name) for name in ("a.jpg", "sub/b.jpg",
                                                         "outside/c.jpg"))
    assert sorted(entry["path"] for entry in unlisted) == [
        str(cats / "again"), str(cats / "sub" / "tree"), str(cats / "sub" / "up")]
    assert {entry["reason"] for entry in unlisted} == {finding.LINK_TO_ANCESTOR}


def test_expand_inputs_reports_the_link_once_and_answers_for_the_rest(tmp_path):
    touch(str(tmp_path / "photos" / "a.jpg"))
    os.symlink("..", tmp_path / "photos" / "parent")
    paths, problems = finding.expand_inputs([str(tmp_path / "photos")])
    assert paths == [str(tmp_path / "photos" / "a.jpg")]
    assert problems == [{"path": str(tmp_path / "photos" / "parent"),
                         "error": finding.LINK_TO_ANCESTOR}]
