"""suite/data/pipeline.py: readers' shares of a split are disjoint and cover
it, and a record whose label is outside the classes is an error naming its
shard."""
import os
import shutil

import pytest
import tensorflow as tf

from helpers import TRAIN_ARGS, one_error_line, run_script
from suite.data import contract, pipeline




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
