"""suite/data/convert.py, in process: deduplication, the classes, the stratified
split, the shard count and the validation cap; names that are not UTF-8 kept
as bytes; class names labels.txt cannot hold refused before anything is written."""
import os

import pytest
import tensorflow as tf

from helpers import NOT_UTF8, make_tree, strict_json
from suite.data import contract, convert
from suite.images.finding import LINK_TO_ANCESTOR
from suite.plumbing import errors


def image(tree, class_name, name, sha256=None):
    return {"tree": tree, "class_name": class_name, "path": f"/{tree}/{class_name}/{name}",
            "filename": f"{class_name}/{name}", "sha256": sha256 or f"{class_name}/{name}"}


def test_deduplicate_keeps_one_copy_and_drops_images_under_two_labels():
    images = [image("train", "cat", "a.png", "h1"), image("train", "cat", "a2.png", "h1"),
              image("train", "cat", "b.png", "h2"), image("train", "dog", "b.png", "h2"),
              image("train", "dog", "c.png", "h3")]
    kept, duplicates, conflicts, skipped = convert.deduplicate(images)
    assert [i["path"] for i in kept] == ["/train/cat/a.png", "/train/dog/c.png"]
    assert duplicates == [{"path": "/train/cat/a2.png", "duplicate_of": "/train/cat/a.png"}]
    assert conflicts == [{"paths": ["/train/cat/b.png", "/train/dog/b.png"],
                          "classes": ["cat", "dog"]}]
    assert sorted(s["path"] for s in skipped) == [
        "/train/cat/a2.png", "/train/cat/b.png", "/train/dog/b.png"]


def test_choose_classes_are_sorted_folders_with_usable_images():
    images = [image("train", "zebra", "a"), image("train", "ant", "b")]
    classes, empty = convert.choose_classes(images, ["ant", "empty", "zebra"], "dir")
    assert (classes, empty) == (["ant", "zebra"], ["empty"])
    with pytest.raises(errors.UserError, match="at least 2"):
        convert.choose_classes(images[:1], ["zebra"], "dir")
    with pytest.raises(errors.UserError, match="classes that --image_dir lacks: bee"):
        convert.choose_classes(images + [image("validation", "bee", "c")], [], "dir", "val")


def test_split_is_stratified_deterministic_and_labels_by_sorted_class():
    images = ([image("train", "a", f"{i}") for i in range(10)]
              + [image("train", "b", f"{i}") for i in range(3)]
              + [image("train", "c", "only")])
    splits = convert.split_images([dict(i) for i in images], ["a", "b", "c"], 0.2, seed=7)
    validation = sorted((i["class_name"], i["label"]) for i in splits["validation"])
    # 20% of 10 is 2; a class of 3 still gets one; a class of one keeps it for training.
    assert validation == [("a", 0), ("a", 0), ("b", 1)]
    assert len(splits["train"]) == 11
    again = convert.split_images([dict(i) for i in images], ["a", "b", "c"], 0.2, seed=7)
    assert [i["path"] for i in again["validation"]] == [i["path"] for i in splits["validation"]]
    other = convert.split_images([dict(i) for i in images], ["a", "b", "c"], 0.2, seed=8)
    assert ([i["path"] for i in other["train"]] != [i["path"] for i in splits["train"]])


def test_split_with_a_validation_tree_keeps_the_trees_apart():
    images = [image("train", "a", "1"), image("train", "b", "2"), image("validation", "a", "3")]
    splits = convert.split_images(images, ["a", "b"], 0.5, seed=0, separate_validation=True)
    assert sorted(i["path"] for i in splits["train"]) == ["/train/a/1", "/train/b/2"]
    assert [i["path"] for i in splits["validation"]] == ["/validation/a/3"]


@pytest.mark.parametrize("total_bytes,examples,expected", [
    (5e6, 100, 1),      # small: one file
    (45e6, 1000, 4),    # 40 MB+: four files so reads can interleave
    (1e9, 100000, 10),  # large: ~100 MB files
    (1e9, 3, 3),        # never more shards than examples
])
def test_auto_num_shards(total_bytes, examples, expected):
    assert convert._auto_num_shards(total_bytes, examples) == expected


@pytest.mark.parametrize("ratio,cap,images,expected", [
    (0.2, 5000, 1000, 0.2), (0.2, 5000, 60000, 5000 / 60000), (0.2, 0, 60000, 0.2),
    (0.1, 5000, 50000, 0.1)])
def test_the_validation_share_is_capped_at_about_max_validation_images(ratio, cap, images,
                                                                      expected):
    assert convert.validation_share(ratio, cap, images) == pytest.approx(expected)


def read_filenames(data_dir):
    info = contract.load_dataset_info(data_dir)
    names = []
    for shard in info["shards"]["train"] + info["shards"]["validation"]:
        for raw in tf.compat.v1.io.tf_record_iterator(os.path.join(data_dir, shard)):
            names.append(tf.train.Example.FromString(raw)
                         .features.feature["image/filename"].bytes_list.value[0])
    return sorted(names)


def test_a_file_name_that_is_not_utf8_keeps_its_bytes(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    os.rename(os.path.join(image_dir, "cat", "0.png"),
              os.path.join(image_dir, "cat", NOT_UTF8 + ".png"))
    with open(os.path.join(image_dir, "dog", NOT_UTF8 + ".txt"), "w") as f:
        f.write("not an image, and a name that is not text")
    convert.convert(image_dir, str(tmp_path / "out"), validation_ratio=0, workers=1)
    assert b"cat/caf\xe9.png" in read_filenames(str(tmp_path / "out"))
    info = strict_json(tmp_path / "out" / contract.DATASET_FILE)
    assert [entry["path"] for entry in info["skipped"]] == [
        os.path.join(image_dir, "dog", "caf\\xe9.txt")]


@pytest.mark.parametrize("bad", ["two\nlines", NOT_UTF8, " "])
def test_a_class_name_labels_txt_cannot_hold_is_refused_before_anything_is_written(tmp_path, bad):
    image_dir = make_tree(str(tmp_path / "images"), classes=("cat", bad))
    with pytest.raises(errors.UserError, match="labels.txt cannot hold") as error:
        convert.convert(image_dir, str(tmp_path / "out"), workers=1)
    assert "\n" not in str(error.value)
    str(error.value).encode("utf-8")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("reason,kind", [
    ("empty file", "empty file"),
    ("broken image: premature end of data segment", "broken image"),
    ("not a regular file (a named pipe): not read", "not a regular file"),
    ("300,000,000 bytes, more than any image we accept (268,435,456): shrink it first",
     "N bytes, more than any image we accept"),
    ("duplicate of an image kept: /images/cat/a.png", "duplicate of an image kept"),
])
def test_reason_kind_drops_the_particulars(reason, kind):
    assert convert.reason_kind(reason) == kind


def test_skipped_files_are_summarised_by_reason_with_a_few_of_each(capsys):
    skipped = ([{"path": f"/images/cat/{i}.jpg", "reason": "empty file"} for i in range(100000)]
               + [{"path": f"/images/dog/{i}.jpg", "reason": f"broken image: error {i}"}
                  for i in range(2)])
    convert.print_skipped(skipped, "out/dataset.json")
    assert capsys.readouterr().out.splitlines() == [
        'skipped 100002 file(s), by reason (each one with its reason: out/dataset.json, '
        '"skipped"):',
        "   100000  empty file: /images/cat/0.jpg, /images/cat/1.jpg, /images/cat/2.jpg "
        "and 99997 more",
        "        2  broken image: /images/dog/0.jpg, /images/dog/1.jpg"]


def test_a_class_folder_linked_to_the_tree_is_skipped_and_the_rest_converts(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    os.symlink(".", os.path.join(image_dir, "self"))
    info = convert.convert(image_dir, str(tmp_path / "out"), validation_ratio=0, workers=1)
    assert info["classes"] == ["cat", "dog"] and info["num_examples"]["train"] == 6
    assert info["label_conflicts"] == []
    assert info["skipped"] == [{"path": os.path.join(image_dir, "self"),
                                "reason": LINK_TO_ANCESTOR}]


def test_excluded_images_are_left_out_counted_and_listed(tmp_path, capsys):
    """--exclude: the listed images are not in the records, dataset.json
    lists them and what matched nothing, the report counts both; the
    images themselves stay."""
    image_dir = make_tree(str(tmp_path / "images"), per_class=4)
    listed = tmp_path / "suspects.txt"
    listed.write_text("cat/1.png\ndog/3.png\ncat/7.png\n")
    out = str(tmp_path / "out")
    info = convert.convert(image_dir, out, validation_ratio=0, workers=1, exclude=str(listed))
    assert info["num_examples"]["train"] == 6
    assert sorted(os.path.relpath(p, image_dir) for p in info["excluded"]) == [
        "cat/1.png", "dog/3.png"]
    assert info["exclude_unmatched"] == ["cat/7.png"]
    assert info["options"]["exclude"] == str(listed)
    assert strict_json(os.path.join(out, contract.DATASET_FILE))["excluded"] == info["excluded"]
    names = {record["image/filename"].numpy().decode() for record in (
        tf.io.parse_single_example(r, contract.FEATURES)
        for r in tf.data.TFRecordDataset(
            [os.path.join(out, name) for name in info["shards"]["train"]]))}
    assert names == {"cat/0.png", "cat/2.png", "cat/3.png", "dog/0.png", "dog/1.png", "dog/2.png"}
    assert os.path.isfile(os.path.join(image_dir, "cat", "1.png"))  # the user's files stay
    convert.print_report(info, out)
    assert ("2 image(s) left out as --exclude lists them; 1 listed path(s) named no image of "
            "the tree, e.g. cat/7.png") in capsys.readouterr().out
