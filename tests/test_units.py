"""Fast unit tests of the pieces the scripts are made of, on plain data:
FlowIO's conversion steps, the split, the augmentation, the learning-rate
schedule, the default image size, the class weights and the ONNX export's
rewrite. No subprocess, no training: `python -m pytest -q -m "not slow"`
runs these in seconds."""
import argparse
import io
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import FlowIO
import cli
import imagefile
import modeldir
import resnet
import train


# ---------------------------------------------------------------------------
# FlowIO's steps
# ---------------------------------------------------------------------------
def image(tree, class_name, name, sha256=None):
    return {"tree": tree, "class_name": class_name, "path": f"/{tree}/{class_name}/{name}",
            "filename": f"{class_name}/{name}", "sha256": sha256 or f"{class_name}/{name}"}


def test_find_files_lists_classes_and_reports_stray_files(tmp_path):
    for path in ("cat/a.png", "cat/deeper/b.png", "dog/c.png", "stray.png", ".hidden/d.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    files, skipped, folders = FlowIO.find_files(str(tmp_path))
    assert folders == ["cat", "dog"]
    assert [(f["class_name"], f["filename"]) for f in files] == [
        ("cat", os.path.join("cat", "a.png")), ("cat", os.path.join("cat", "deeper", "b.png")),
        ("dog", os.path.join("dog", "c.png"))]
    assert {f["tree"] for f in files} == {"train"}
    assert skipped == [{"path": str(tmp_path / "stray.png"), "reason": "not inside a class folder"}]


def test_find_files_without_class_folders_is_a_user_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(cli.UserError, match="no class folders"):
        FlowIO.find_files(str(tmp_path))


def test_deduplicate_keeps_one_copy_and_drops_images_under_two_labels():
    images = [image("train", "cat", "a.png", "h1"), image("train", "cat", "a2.png", "h1"),
              image("train", "cat", "b.png", "h2"), image("train", "dog", "b.png", "h2"),
              image("train", "dog", "c.png", "h3")]
    kept, duplicates, conflicts, skipped = FlowIO.deduplicate(images)
    assert [i["path"] for i in kept] == ["/train/cat/a.png", "/train/dog/c.png"]
    assert duplicates == [{"path": "/train/cat/a2.png", "duplicate_of": "/train/cat/a.png"}]
    assert conflicts == [{"paths": ["/train/cat/b.png", "/train/dog/b.png"],
                          "classes": ["cat", "dog"]}]
    assert sorted(s["path"] for s in skipped) == [
        "/train/cat/a2.png", "/train/cat/b.png", "/train/dog/b.png"]


def test_choose_classes_are_sorted_folders_with_usable_images():
    images = [image("train", "zebra", "a"), image("train", "ant", "b")]
    classes, empty = FlowIO.choose_classes(images, ["ant", "empty", "zebra"], "dir")
    assert (classes, empty) == (["ant", "zebra"], ["empty"])
    with pytest.raises(cli.UserError, match="at least 2"):
        FlowIO.choose_classes(images[:1], ["zebra"], "dir")
    with pytest.raises(cli.UserError, match="classes that --image_dir lacks: bee"):
        FlowIO.choose_classes(images + [image("validation", "bee", "c")], [], "dir", "val")


def test_split_is_stratified_deterministic_and_labels_by_sorted_class():
    images = ([image("train", "a", f"{i}") for i in range(10)]
              + [image("train", "b", f"{i}") for i in range(3)]
              + [image("train", "c", "only")])
    splits = FlowIO.split_images([dict(i) for i in images], ["a", "b", "c"], 0.2, seed=7)
    validation = sorted((i["class_name"], i["label"]) for i in splits["validation"])
    # 20% of 10 is 2; a class of 3 still gets one; a class of one keeps it for training.
    assert validation == [("a", 0), ("a", 0), ("b", 1)]
    assert len(splits["train"]) == 11
    again = FlowIO.split_images([dict(i) for i in images], ["a", "b", "c"], 0.2, seed=7)
    assert [i["path"] for i in again["validation"]] == [i["path"] for i in splits["validation"]]
    other = FlowIO.split_images([dict(i) for i in images], ["a", "b", "c"], 0.2, seed=8)
    assert ([i["path"] for i in other["train"]] != [i["path"] for i in splits["train"]])


def test_split_with_a_validation_tree_keeps_the_trees_apart():
    images = [image("train", "a", "1"), image("train", "b", "2"), image("validation", "a", "3")]
    splits = FlowIO.split_images(images, ["a", "b"], 0.5, seed=0, separate_validation=True)
    assert sorted(i["path"] for i in splits["train"]) == ["/train/a/1", "/train/b/2"]
    assert [i["path"] for i in splits["validation"]] == ["/validation/a/3"]


@pytest.mark.parametrize("total_bytes,examples,expected", [
    (5e6, 100, 1),      # small: one file
    (45e6, 1000, 4),    # 40 MB+: four files so reads can interleave
    (1e9, 100000, 10),  # large: ~100 MB files
    (1e9, 3, 3),        # never more shards than examples
])
def test_auto_num_shards(total_bytes, examples, expected):
    assert FlowIO._auto_num_shards(total_bytes, examples) == expected


def test_labels_file_round_trips_and_rejects_a_gap(tmp_path):
    FlowIO.write_labels(str(tmp_path), ["猫", "dog with space"])
    assert FlowIO.read_labels(str(tmp_path / FlowIO.LABELS_FILE)) == ["猫", "dog with space"]
    (tmp_path / FlowIO.LABELS_FILE).write_text("0:a\n2:b\n", encoding="utf-8")
    with pytest.raises(cli.UserError, match="line 2"):
        FlowIO.read_labels(str(tmp_path / FlowIO.LABELS_FILE))


# ---------------------------------------------------------------------------
# The augmentation
# ---------------------------------------------------------------------------
def jpeg(width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def augment(encoded, image_size, seed):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        return session.run(FlowIO.preprocess_for_train(
            tf.constant(encoded), image_size, tf.constant(seed, tf.int64)))


@pytest.mark.parametrize("width,height,size", [(28, 28, 32), (640, 480, 64), (300, 90, 32)])
def test_augmentation_gives_the_training_size_in_the_normalised_range(width, height, size):
    out = augment(jpeg(width, height), size, [1, 2])
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    low = (0 - np.array(FlowIO.MEAN_RGB)) / np.array(FlowIO.STD_RGB)
    high = (255 - np.array(FlowIO.MEAN_RGB)) / np.array(FlowIO.STD_RGB)
    assert (out >= low - 1e-3).all() and (out <= high + 1e-3).all()


def test_augmentation_is_a_function_of_its_seed():
    encoded = jpeg(96, 96, seed=3)
    first, again = augment(encoded, 32, [5, 6]), augment(encoded, 32, [5, 6])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, augment(encoded, 32, [7, 8]))


def crop_windows(augmentation, shape, seeds=40):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        window, flip, _ = FlowIO.augment(tf.constant(shape, tf.int32), augmentation, seed, 32)
        return [session.run((window, flip), {seed: [s, 7 * s + 1]}) for s in range(seeds)]


@pytest.mark.parametrize("augmentation", ["light", "standard", "strong"])
def test_each_preset_crops_within_its_own_area_and_aspect_range(augmentation):
    preset = FlowIO.AUGMENTATIONS[augmentation]
    results = crop_windows(augmentation, [280, 280, 3])
    areas = [h * w / 280 ** 2 for (_, _, h, w), _ in results]
    aspects = [w / h for (_, _, h, w), _ in results]
    # (sample_distorted_bounding_box rounds the window to whole pixels)
    assert min(areas) >= preset["area"][0] - 0.01 and max(areas) <= 1.0
    assert min(aspects) >= preset["aspect"][0] - 0.02 and max(aspects) <= preset["aspect"][1] + 0.02
    # The range is used, not one corner of it, and about half the crops flip.
    assert min(areas) < preset["area"][0] + 0.25 * (1 - preset["area"][0])
    assert 0.2 < np.mean([flip for _, flip in results]) < 0.8


def test_the_light_preset_never_zooms_in_as_far_as_standard():
    light = [h * w for (_, _, h, w), _ in crop_windows("light", [28, 28, 3])]
    standard = [h * w for (_, _, h, w), _ in crop_windows("standard", [28, 28, 3])]
    assert min(light) >= 0.55 * 28 * 28 and min(standard) < 0.45 * 28 * 28


def test_no_augmentation_is_the_evaluation_transform():
    encoded = jpeg(40, 30, seed=4)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        trained, evaluated = session.run((
            FlowIO.preprocess_for_train(tf.constant(encoded), 32, tf.constant([1, 2], tf.int64),
                                        "none"),
            FlowIO.preprocess_for_eval(tf.constant(encoded), 32)))
    np.testing.assert_array_equal(trained, evaluated)


def erased_boxes(probability, image_size, seeds=200):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        _, _, box = FlowIO.augment(tf.constant([40, 40, 3], tf.int32), "light", seed,
                                   image_size, probability)
        return np.array([session.run(box, {seed: [s, 3 * s + 2]}) for s in range(seeds)])


def test_random_erasing_picks_boxes_in_its_area_range_at_its_rate():
    boxes = erased_boxes(0.5, 28)
    erased = boxes[boxes[:, 2] > 0]
    assert 0.35 < len(erased) / len(boxes) < 0.65
    top, left, height, width = erased.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 28).all() and (left + width <= 28).all()
    areas = height * width / 28 ** 2
    # Whole pixels and the clip at the image's edge move areas a little.
    assert areas.min() >= 0.005 and areas.max() <= FlowIO.ERASING_AREA[1] + 0.05
    assert areas.min() < 0.08 and areas.max() > 0.3  # the range is used
    assert (height > width).any() and (width > height).any()
    assert (erased_boxes(0, 28)[:, 2:] == 0).all() and (erased_boxes(1, 28)[:, 2:] > 0).all()


def test_random_erasing_fills_its_box_with_noise_and_keeps_the_rest():
    encoded = jpeg(28, 28, seed=5)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.constant([11, 12], tf.int64)
        _, _, box = FlowIO.augment(tf.io.extract_jpeg_shape(encoded), "light", seed, 28, 1.0)
        plain, erased, again, box = session.run((
            FlowIO.preprocess_for_train(tf.constant(encoded), 28, seed, "light"),
            FlowIO.preprocess_for_train(tf.constant(encoded), 28, seed, "light",
                                        random_erasing=1.0),
            FlowIO.preprocess_for_train(tf.constant(encoded), 28, seed, "light",
                                        random_erasing=1.0),
            box))
    top, left, height, width = box
    inside = np.zeros((28, 28), bool)
    inside[top:top + height, left:left + width] = True
    np.testing.assert_array_equal(erased, again)  # a function of the seed
    np.testing.assert_array_equal(erased[~inside], plain[~inside])
    noise = erased[inside]
    assert not np.isclose(noise, plain[inside]).any()
    assert abs(noise.mean()) < 0.3 and 0.7 < noise.std() < 1.3


def test_random_erasing_applies_without_a_crop_too():
    encoded = jpeg(40, 30, seed=4)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.constant([1, 2], tf.int64)
        erased, evaluated = session.run((
            FlowIO.preprocess_for_train(tf.constant(encoded), 32, seed, "none",
                                        random_erasing=1.0),
            FlowIO.preprocess_for_eval(tf.constant(encoded), 32)))
    changed = np.any(erased != evaluated, axis=2)
    assert 0.01 < changed.mean() <= 0.45


@pytest.mark.parametrize("source_side,image_size,expected", [
    (28, 28, "light"), (40, 32, "light"), (100, 64, "light"), (128, 64, "standard"),
    (500, 224, "standard")])
def test_default_augmentation_follows_the_source_and_training_sizes(source_side, image_size,
                                                                     expected):
    assert FlowIO.default_augmentation(source_side, image_size) == expected


def mix(mixup, cutmix, batch=4, size=8, classes=3):
    images = np.stack([np.full((size, size, 1), float(i)) for i in range(batch)]).astype(np.float32)
    targets = np.eye(classes, dtype=np.float32)[np.arange(batch) % classes]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(3)
        mixed = FlowIO.mix_batch(tf.constant(images), tf.constant(targets), mixup, cutmix)
        return images, targets, session.run(mixed)


def test_mixup_mixes_images_and_targets_by_the_same_weight():
    images, targets, (mixed, mixed_targets) = mix(mixup=0.4, cutmix=0)
    # Image i is i everywhere, mixed with image batch-1-i: recover the weight.
    weight = (mixed[0, 0, 0, 0] - 3.0) / (0.0 - 3.0)
    np.testing.assert_allclose(mixed[0], weight * images[0] + (1 - weight) * images[3], atol=1e-5)
    np.testing.assert_allclose(mixed_targets[0], weight * targets[0] + (1 - weight) * targets[3],
                               atol=1e-5)
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, atol=1e-5)


def test_cutmix_pastes_a_box_and_mixes_targets_by_its_area():
    images, targets, (mixed, mixed_targets) = mix(mixup=0, cutmix=1.0)
    pasted = np.mean(mixed[0] == images[3])  # image 0 gets a box of image 3
    assert set(np.unique(mixed[0])) <= {0.0, 3.0}
    np.testing.assert_allclose(mixed_targets[0], (1 - pasted) * targets[0] + pasted * targets[3],
                               atol=1e-5)


def test_mixing_off_changes_nothing():
    images, targets, (mixed, mixed_targets) = mix(mixup=0, cutmix=0)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_array_equal(mixed_targets, targets)


@pytest.mark.parametrize("ratio,cap,images,expected", [
    (0.2, 5000, 1000, 0.2), (0.2, 5000, 60000, 5000 / 60000), (0.2, 0, 60000, 0.2),
    (0.1, 5000, 50000, 0.1)])
def test_the_validation_share_is_capped_at_about_max_validation_images(ratio, cap, images,
                                                                      expected):
    assert FlowIO.validation_share(ratio, cap, images) == pytest.approx(expected)


def eval_rgb(pixels, image_size, decoded=False):
    """FlowIO.preprocess_for_eval of pixels (as a quality-100 JPEG), back in
    0..255; with decoded, also the JPEG's own pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        encoded = tf.constant(buffer.getvalue())
        out, jpeg_pixels = session.run((FlowIO.preprocess_for_eval(encoded, image_size),
                                        tf.io.decode_jpeg(encoded, channels=3)))
    assert out.shape == (image_size, image_size, 3)
    rgb = out * np.array(FlowIO.STD_RGB) + np.array(FlowIO.MEAN_RGB)
    return (rgb, jpeg_pixels) if decoded else rgb


def test_evaluation_preprocessing_is_the_centre_crop():
    # A 80x160 image whose left and right quarters are black and middle white:
    # resized to 74x148 (64 / 0.875 on the shorter side), the central 64x64
    # square lies inside the white middle.
    pixels = np.zeros((80, 160, 3), np.uint8)
    pixels[:, 40:120] = 255
    rgb = eval_rgb(pixels, 64)
    assert rgb[:, 8:56].min() > 240  # the middle of the crop is the white band


def test_evaluation_sees_the_whole_of_a_small_image():
    # A 28x28 image framed by a white 2-px border: at 28 px evaluation keeps
    # the frame (the centre crop would cut it off), and upscaled to 32 too.
    pixels = np.zeros((28, 28, 3), np.uint8)
    pixels[:2], pixels[-2:], pixels[:, :2], pixels[:, -2:] = 255, 255, 255, 255
    assert imagefile.eval_crop(28) == imagefile.eval_crop(32) == 1.0
    assert imagefile.eval_crop(33) == imagefile.eval_crop(224) == 0.875
    rgb, jpeg_pixels = eval_rgb(pixels, 28, decoded=True)
    np.testing.assert_allclose(rgb, jpeg_pixels, atol=0.01)  # at its own size: as it is
    for rgb in (eval_rgb(pixels, 28), eval_rgb(pixels, 32)):
        assert rgb[0].min() > 200 and rgb[:, -1].min() > 200 and rgb[14, 14].max() < 20


# ---------------------------------------------------------------------------
# The training schedule and options
# ---------------------------------------------------------------------------
def schedule(lr_schedule, steps, warmup_epochs=1, steps_per_epoch=10, total_steps=100):
    args = argparse.Namespace(learning_rate=0.1, warmup_epochs=warmup_epochs,
                              lr_schedule=lr_schedule)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        step = tf.compat.v1.placeholder(tf.int64, [])
        rate = train.learning_rate_schedule(args, step, steps_per_epoch, total_steps)
        return [float(session.run(rate, {step: s})) for s in steps]


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    rates = schedule("cosine", [0, 4, 9, 10, 55, 100])
    np.testing.assert_allclose(rates[:3], [0.01, 0.05, 0.1], rtol=1e-5)
    # After the 10 warm-up steps, cosine over the remaining 90.
    np.testing.assert_allclose(rates[3], 0.1, rtol=1e-5)
    np.testing.assert_allclose(rates[4], 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)), rtol=1e-4)
    assert rates[5] == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    # warm-up of one step, then progress = (step - 1) / 99
    rates = schedule("step", [20, 49, 53, 80, 90], warmup_epochs=0)
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-5)


def test_warmup_never_takes_more_than_half_of_a_short_run():
    rates = schedule("cosine", [4, 5], warmup_epochs=5, total_steps=10)
    assert rates[0] == pytest.approx(0.1 * 5 / 5, rel=1e-5)  # ramp ends at step 5 of 10


@pytest.mark.parametrize("median_side,expected", [
    (10, 16), (28, 28), (32, 32), (33, 64), (150, 160), (1000, 224)])
def test_default_image_size_keeps_small_images_and_rounds_larger_ones_up_to_32(median_side,
                                                                              expected):
    info = {"image_size": {"height": {"median": median_side}, "width": {"median": 10}}}
    assert train.default_image_size(info) == expected


@pytest.mark.parametrize("image_size,expected", [(16, "small"), (32, "small"), (64, "imagenet"),
                                                 (224, "imagenet")])
def test_default_stem_is_small_for_small_images(image_size, expected):
    assert train.default_stem(image_size) == expected


@pytest.mark.parametrize("num_train,model,expected", [
    (800, "layer_14", 30), (20000, "layer_14", 15), (55000, "layer_14", 10),
    (1_200_000, "layer_14", 10), (55000, "layer_50", 10), (55000, "layer_14_half", 25),
    (20000, "layer_14_half", 30), (1_200_000, "layer_14_half", 10)])
def test_default_epochs_shrink_with_the_data_between_bounds(num_train, model, expected):
    assert train.default_epochs(num_train, model) == expected


def test_layer_14_half_is_layer_14_at_half_the_depths():
    half, full = resnet.ResNet_demo["layer_14_half"], resnet.ResNet_demo["layer_14"]
    assert [stage["depth"] * 2 for stage in half] == [stage["depth"] for stage in full]
    assert [stage["num_blocks"] for stage in half] == [stage["num_blocks"] for stage in full]


def test_balanced_class_weights_are_inverse_frequency():
    info = {"counts": {"a": {"train": 10}, "b": {"train": 30}}}
    args = argparse.Namespace(class_weights="balanced")
    np.testing.assert_allclose(train.class_weight_vector(args, info, ["a", "b"]), [2.0, 2 / 3])
    args.class_weights = "none"
    np.testing.assert_array_equal(train.class_weight_vector(args, info, ["a", "b"]), [1, 1])


# ---------------------------------------------------------------------------
# The model directory
# ---------------------------------------------------------------------------
def test_checkpoints_are_listed_newest_first_by_their_index_files(tmp_path):
    for step in (5, 100, 20):
        (tmp_path / f"model.ckpt-{step}.index").write_bytes(b"")
    (tmp_path / "model.ckpt-7.data-00000-of-00001").write_bytes(b"")  # no index: not complete
    found = modeldir.list_checkpoints(str(tmp_path))
    assert [modeldir.checkpoint_step(p) for p in found] == [100, 20, 5]
    assert modeldir.resolve_checkpoint(str(tmp_path)) == found[0]
    with pytest.raises(cli.UserError, match="no checkpoint"):
        modeldir.resolve_checkpoint(str(tmp_path), "best")


# ---------------------------------------------------------------------------
# imagefile's pixels without TensorFlow (the TFLite/ONNX clients' input)
# ---------------------------------------------------------------------------
def photo_like(rng, height, width):
    """Smooth colour fields with noise: JPEG errors like a photo's."""
    smooth = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    pixels = np.asarray(smooth.resize((width, height), Image.BICUBIC), dtype=np.float64)
    return np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)


def test_pillow_decodes_jpegs_to_tensorflows_pixels(tmp_path):
    """imagefile.decode_jpeg_as_tensorflow equals tf.io.decode_jpeg bit for bit:
    4:4:4, 4:2:2 and 4:2:0, baseline and progressive, odd, tiny and 2-wide
    sizes, low and high quality."""
    rng = np.random.default_rng(7)
    cases = [(h, w, sub, q, prog) for (h, w) in ((1, 1), (3, 2), (5, 4), (17, 31), (64, 48))
             for sub in (0, 1, 2) for q, prog in ((50, False), (95, True))]
    for h, w, subsampling, quality, progressive in cases:
        path = tmp_path / "a.jpg"
        Image.fromarray(photo_like(rng, h, w)).save(path, quality=quality,
                                                    subsampling=subsampling,
                                                    progressive=progressive)
        encoded = path.read_bytes()
        np.testing.assert_array_equal(imagefile.decode_jpeg_as_tensorflow(encoded),
                                      tf.io.decode_jpeg(encoded, channels=3).numpy(),
                                      err_msg=str((h, w, subsampling, quality, progressive)))


def test_pillow_eval_pixels_equal_the_graph():
    """imagefile.eval_pixels gives what FlowIO.preprocess_for_eval gives before
    normalising: files re-encoded as FlowIO stores them (PNG with alpha,
    grayscale) and JPEGs kept as they are (4:2:0, 4:2:2), at sizes that
    shrink, enlarge and change the aspect ratio."""
    rng = np.random.default_rng(3)
    files = []
    for (h, w), fmt, options in (((40, 60), "JPEG", {"quality": 90}),
                                 ((77, 51), "JPEG", {"quality": 75, "subsampling": 1}),
                                 ((28, 28), "PNG", {}), ((300, 200), "JPEG", {})):
        image = Image.fromarray(photo_like(rng, h, w))
        if fmt == "PNG":
            image = image.convert("LA")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        files.append(buffer.getvalue())
    for data in files:
        encoded, _, _ = imagefile.encode_image_bytes(data)
        for size in (16, 32, 224):
            graph = FlowIO.preprocess_for_eval(encoded, size) * FlowIO.STD_RGB + FlowIO.MEAN_RGB
            np.testing.assert_allclose(imagefile.eval_pixels(encoded, size), graph, atol=0.02)


# ---------------------------------------------------------------------------
# The ONNX export's rewrite of option-A shortcuts
# ---------------------------------------------------------------------------
def shortcut_block_model(spatial_pad=False):
    """An ONNX model of one bottleneck's end, as tf2onnx converts it:
    Relu(Conv(h) + Pad(MaxPool(x))), the Pad adding 16 channels before the
    shortcut's 16 and 32 after (or, with spatial_pad, padding rows instead)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    pads = [0, 0, 1, 0, 0, 0, 1, 0] if spatial_pad else [0, 16, 0, 0, 0, 32, 0, 0]
    out_channels = 16 if spatial_pad else 64
    initializers = [
        numpy_helper.from_array(rng.normal(size=(16, 16, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(out_channels, 16, 1, 1)).astype(np.float32), "W3"),
        numpy_helper.from_array(rng.normal(size=out_channels).astype(np.float32), "B3"),
        numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["h"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Conv", ["h", "W3", "B3"], ["conv3"], name="conv3"),
        helper.make_node("MaxPool", ["x"], ["sampled"], name="sampling", kernel_shape=[1, 1],
                         strides=[2, 2]),
        helper.make_node("Pad", ["sampled", "pads"], ["filled"], name="depthFilling"),
        helper.make_node("Add", ["conv3", "filled"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["y"], name="relu")]
    height = 10 if spatial_pad else 8
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_channels, height, 8])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def run_onnx(model, x):
    import onnxruntime
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_split_padded_shortcuts_computes_the_same_without_the_pad():
    import onnx
    import useModel
    model = shortcut_block_model()
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 16)).astype(np.float32)
    expected = run_onnx(model, x)
    assert useModel.split_padded_shortcuts(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert sorted(n.op_type for n in model.graph.node) == [
        "Add", "Concat", "Conv", "Conv", "Conv", "Conv", "MaxPool", "Relu", "Relu", "Relu"]
    assert {t.name for t in model.graph.initializer} >= {"W1"} and not (
        {"W3", "B3", "pads"} & {t.name for t in model.graph.initializer})  # no dead weights
    np.testing.assert_allclose(run_onnx(model, x), expected, rtol=1e-5, atol=1e-5)


def test_split_padded_shortcuts_leaves_other_pads_alone():
    import useModel
    model = shortcut_block_model(spatial_pad=True)
    before = model.SerializeToString()
    assert useModel.split_padded_shortcuts(model) == 0
    assert model.SerializeToString() == before
