"""suite/data/pipeline.py: readers' shares of a split are disjoint and cover
it, a record whose label is outside the classes is an error naming its
shard, shards that hold another number of records than dataset.json lists
are one line, and so are records that are not FlowIO's (TF-slim's PNG)."""
import json
import os
import shutil

import pytest
import tensorflow as tf

from helpers import TRAIN_ARGS, one_error_line, run_script
from suite.data import contract, pipeline
from suite.plumbing import errors




def _filenames(data_dir, shard):
    with tf.Graph().as_default():
        dataset = pipeline.make_dataset(data_dir, "train", 32, 1, training=False, shard=shard)
        batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        names = []
        with tf.compat.v1.Session() as session:
            while True:
                try:
                    names.extend(session.run(batch[2]))
                except tf.errors.OutOfRangeError:
                    return names


@pytest.mark.parametrize("readers", [2, 3])  # by file (2 shards), by record (3 > 2 shards)
def test_readers_shares_are_disjoint_and_cover_the_split(small_data, readers):
    everything = _filenames(small_data, None)
    shares = [_filenames(small_data, (i, readers)) for i in range(readers)]
    assert sorted(sum(shares, [])) == sorted(everything)
    assert all(abs(len(share) - len(everything) / readers) <= 1 for share in shares)


@pytest.mark.slow
def test_a_record_with_a_label_outside_the_classes_is_an_error_naming_its_shard(
        colour_data, trained_model, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(colour_data[1], data_dir)
    shard = os.path.join(data_dir, contract.load_dataset_info(data_dir)["shards"]["validation"][0])
    records = list(tf.compat.v1.io.tf_record_iterator(shard))
    example = tf.train.Example.FromString(records[3])
    example.features.feature["image/class/label"].int64_list.value[0] = 7  # 3 classes
    records[3] = example.SerializeToString()
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--data_dir", data_dir,
                        "--output_dir", str(tmp_path / "eval"), check=False)
    one_error_line(result, shard, "labelled [7]", "re-run FlowIO.py")
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir",
                        str(tmp_path / "m"), *TRAIN_ARGS, "--epochs", "1", check=False)
    one_error_line(result, shard, "labelled [7]")


def _read_training(data_dir, elements, shard=None):
    """The first `elements` training records' file names, as train.py reads them."""
    with tf.Graph().as_default():
        dataset = pipeline.make_dataset(data_dir, "train", 32, 1, training=True, seed=0,
                                        shard=shard)
        batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        with tf.compat.v1.Session() as session:
            return [session.run(batch[2])[0] for _ in range(elements)]


def _list_more_train_records(data_dir, extra):
    """dataset.json made to list `extra` more train records than the shards
    hold, its counts still adding up (as a hand edit would)."""
    path = os.path.join(data_dir, contract.DATASET_FILE)
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    info["num_examples"]["train"] += extra
    info["counts"][info["classes"][0]]["train"] += extra
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return info


def test_a_training_reader_reads_several_passes_when_the_counts_agree(small_data):
    train = contract.load_dataset_info(small_data)["num_examples"]["train"]
    names = _read_training(small_data, 3 * train + 1)
    assert sorted(names[:train]) == sorted(names[train:2 * train])  # each pass: every record


@pytest.mark.parametrize("extra,shard", [(100000, None), (-3, None), (100000, (1, 3))])
def test_shards_that_hold_other_than_dataset_json_lists_are_one_line(small_data, tmp_path,
                                                                     extra, shard):
    data_dir = str(tmp_path / "records")
    shutil.copytree(small_data, data_dir)
    info = _list_more_train_records(data_dir, extra)
    held = info["num_examples"]["train"] - extra
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _read_training(data_dir, 3 * held)  # the first pass ends the read
    message = str(pipeline.explain_data_error(data_dir, "train", error.value))
    assert message == (f"the train shards of {data_dir} hold {held} records but its "
                       f"dataset.json lists {held + extra}: re-run FlowIO.py to rebuild "
                       f"{data_dir}")


def _slim_example(encoded, label):
    """A record as TF-slim's download_and_convert scripts write it
    (dataset_utils.image_to_tfexample): PNG bytes, no file name."""
    feature = {"image/encoded": encoded, "image/format": b"png"}
    example = tf.train.Example()
    for key, value in feature.items():
        example.features.feature[key].bytes_list.value.append(value)
    for key, value in (("image/class/label", label), ("image/height", 32),
                       ("image/width", 32)):
        example.features.feature[key].int64_list.value.append(value)
    return example.SerializeToString()


def test_records_in_tf_slims_png_format_are_refused_in_one_line(small_data, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(small_data, data_dir)
    image = tf.io.encode_png(tf.zeros([32, 32, 3], tf.uint8)).numpy()
    for shard in contract.shard_paths(data_dir, "train"):
        with tf.io.TFRecordWriter(shard) as writer:
            for label in (0, 1, 2):
                writer.write(_slim_example(image, label))
    with pytest.raises(errors.UserError) as error:
        pipeline.make_dataset(data_dir, "train", 32, 4, training=True)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{contract.shard_paths(data_dir, 'train')[0]} holds png images, "
                              f"not FlowIO.py's JPEG records"), message
    assert "run FlowIO.py on the images' class folders" in message


@pytest.mark.slow
def test_train_py_on_a_count_the_shards_do_not_hold_stops_at_once_in_one_line(small_data,
                                                                              tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(small_data, data_dir)
    _list_more_train_records(data_dir, 100000)
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir",
                        str(tmp_path / "m"), *TRAIN_ARGS, "--epochs", "1",
                        "--log_every_steps", "1", check=False, timeout=120)
    one_error_line(result, f"the train shards of {data_dir} hold 18 records", "lists 100018",
                   "re-run FlowIO.py")
    assert "step 1/" not in result.stdout  # stopped before its first step
