"""Evaluates a trained model on FlowIO's validation (or any) TFRecords.

    python Evaluation.py [--model_dir models] [--data_dir data/tfrecords]
                         [--checkpoint PATH|best|latest|all] [--split validation] [--json]
                         [--precision auto|fp32|bf16|fp16]
    python Evaluation.py --image_dir DIR [--model_dir models] [...]
    python Evaluation.py --watch [--watch_timeout 3600] [--model_dir models] [...]

Prints top-1 (and top-5 with at least 5 classes) accuracy, macro-recall
(the mean of the per-class recalls: on imbalanced data, how well the rare
classes are found), the loss, a per-class table of precision, recall, F1 and
support, and a confusion matrix; writes confusion_matrix.png,
misclassified.csv and metrics.json to --output_dir (default:
MODEL_DIR/eval). It evaluates best/'s checkpoint when there is one, else the
newest (`--checkpoint latest`: the newest), and its first line says which
and why (modeldir.describe_checkpoint). `--checkpoint all` evaluates every
checkpoint in --model_dir (best/ included) and marks the best one. --json
prints one JSON object instead (the first line then goes to stderr). The
next line says the precision it computes in (hardware.choose_precision;
"auto": the fastest this machine has that keeps fp32's answers: fp32 on
CPUs, fp16 on GPUs with tensor cores).

--image_dir evaluates every image of a class-per-folder tree without a
FlowIO.py run by the user: the tree is converted exactly as FlowIO.py would
(into a temporary folder, removed afterwards) and all of it is evaluated.
Its class folders must be the model's classes.

--watch evaluates each new checkpoint as train.py writes it, as TF-slim's
evaluation loop does, from any machine that sees --model_dir (a cluster's
shared folder): one line per checkpoint (one JSON object with --json), the
files above for the newest, and TensorBoard summaries in --output_dir, so
`tensorboard --logdir MODEL_DIR` shows validation beside training. It waits
for the first checkpoint, and stops after --watch_timeout seconds without a
new one.
"""
import csv
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import cli

if __name__ == "__main__":
    cli.configure_environment(verbose="--verbose" in sys.argv)  # before TensorFlow loads

import tensorflow as tf

import FlowIO
import hardware
import imagefile
import modeldir
from cli import UserError


def parse_args(argv=None):
    parser = cli.ArgumentParser(description="Evaluate a trained model.")
    parser.add_argument("--model_dir", default="models",
                        help="train.py's output folder (default: %(default)s)")
    parser.add_argument("--data_dir", default=None,
                        help="FlowIO.py's output folder to evaluate on "
                             "(default: data/tfrecords)")
    parser.add_argument("--split", default=None, choices=FlowIO.SPLITS,
                        help="split of --data_dir (default: validation)")
    parser.add_argument("--image_dir", default=None,
                        help="evaluate every image of this class-per-folder tree instead "
                             "(converted as FlowIO.py does, into a temporary folder)")
    parser.add_argument("--checkpoint", default=None,
                        help="a checkpoint prefix, 'best', 'latest' (the newest) or 'all' "
                             "(default: best/'s when there is one, else the newest)")
    parser.add_argument("--batch_size", type=cli.positive_int, default=64, help="(default: %(default)s)")
    parser.add_argument("--precision", choices=hardware.PRECISIONS, default="auto",
                        help="compute in this precision (default: auto, the fastest this "
                             "machine has that keeps fp32's answers: fp32 on CPUs, fp16 on "
                             "GPUs with tensor cores)")
    parser.add_argument("--output_dir", default=None,
                        help="where the PNG, CSV and JSON go (default: MODEL_DIR/eval)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--watch", action="store_true",
                        help="evaluate each new checkpoint of --model_dir as it appears")
    parser.add_argument("--watch_timeout", type=cli.positive_float, default=3600,
                        help="with --watch: stop after this many seconds without a new "
                             "checkpoint (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.watch and (args.checkpoint is not None or args.image_dir is not None):
        parser.error("--watch evaluates the newest checkpoints of --model_dir on --data_dir; "
                     "it takes neither --checkpoint nor --image_dir")
    if args.image_dir is not None:
        if args.data_dir is not None:
            parser.error("give --data_dir (FlowIO.py's records) or --image_dir (image "
                         "folders), not both")
        if args.split is not None:
            parser.error("--split chooses part of --data_dir; with --image_dir every "
                         "image is evaluated")
    else:
        args.data_dir = args.data_dir or "data/tfrecords"
        args.split = args.split or "validation"
    return args


def choose_checkpoints(model_dir, choice):
    """--checkpoint: a prefix, 'best', 'latest', None (best/'s, else the
    newest: modeldir.resolve_checkpoint) or 'all' (every checkpoint in
    model_dir, oldest first, then best/'s). The newest and best are chosen
    when they are loaded (modeldir.restore_chosen), so a train.py running
    meanwhile cannot delete them in between."""
    if choice != "all":
        modeldir.resolve_checkpoint(model_dir, choice)  # a clear error now if there is none
        return [choice]
    chosen = (modeldir.list_checkpoints(model_dir)[::-1]
              + modeldir.list_checkpoints(os.path.join(model_dir, modeldir.BEST_DIR)))
    if not chosen:
        raise UserError(f"no checkpoint in {model_dir}: run train.py first")
    return chosen


def predict_split(manifest, model_dir, checkpoint, data_dir, split, batch_size, precision):
    """Probabilities, true labels and file names of every record of a split,
    computed in `precision` (a hardware.Precision), and the checkpoint they
    came from."""
    network, checkpoint = modeldir.frozen_network(manifest, model_dir, checkpoint,
                                                  precision.graph_dtype)
    graph = tf.Graph()
    with graph.as_default():
        with tf.device("/cpu:0"):  # input on the CPU, as in train.py
            dataset = FlowIO.make_dataset(data_dir, split, manifest["image_size"], batch_size,
                                          training=False,
                                          preprocessing=manifest["preprocessing"])
            images, labels, filenames = \
                tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        probabilities = tf.nn.softmax(modeldir.import_network(network, images))
        with tf.compat.v1.Session(config=hardware.session_config(False, precision)) as session:
            outputs = {"probabilities": [], "labels": [], "filenames": []}
            while True:
                try:
                    p, y, f = session.run([probabilities, labels, filenames])
                except tf.errors.OutOfRangeError:
                    break
                except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                    raise FlowIO.explain_data_error(data_dir, split, error)
                outputs["probabilities"].append(p)
                outputs["labels"].append(y)
                outputs["filenames"].extend(os.fsdecode(name) for name in f)  # any bytes
    return (np.concatenate(outputs["probabilities"]), np.concatenate(outputs["labels"]),
            outputs["filenames"], checkpoint)


def compute_metrics(probabilities, labels, class_names):
    """Accuracy, loss, per-class table and confusion matrix (rows: true class)."""
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    metrics = {
        "num_examples": int(len(labels)),
        "top1": float((predicted == labels).mean()),
        "macro_recall": None,
        "loss": float(-np.log(np.maximum(true_probability, 1e-12)).mean()),
        "per_class": [],
        "confusion_matrix": confusion.tolist(),
    }
    if num_classes >= 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["top5"] = float((top5 == labels[:, None]).any(axis=1).mean())
    for index, name in enumerate(class_names):
        tp = confusion[index, index]
        support, predicted_count = confusion[index].sum(), confusion[:, index].sum()
        precision = tp / predicted_count if predicted_count else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics["per_class"].append({"class": name, "precision": float(precision),
                                     "recall": float(recall), "f1": float(f1),
                                     "support": int(support)})
    # Over the classes that have examples here: a class without any has no recall.
    recalls = [row["recall"] for row in metrics["per_class"] if row["support"]]
    metrics["macro_recall"] = float(np.mean(recalls)) if recalls else 0.0
    return metrics


def misclassified_rows(probabilities, labels, filenames, class_names):
    """Wrong predictions, most confident first (often labelling errors)."""
    predicted = probabilities.argmax(axis=1)
    rows = [{"file": imagefile.display_name(filenames[i]), "true": class_names[labels[i]],
             "predicted": class_names[predicted[i]],
             "probability": float(probabilities[i, predicted[i]])}
            for i in np.flatnonzero(predicted != labels)]
    return sorted(rows, key=lambda row: -row["probability"])


def _font(size):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def draw_confusion_matrix(confusion, class_names, path):
    """A labelled confusion-matrix PNG. Rows and columns are labelled by class
    index, with an index -> name legend beside the grid, so names a font
    cannot draw (Chinese folder names, say) stay readable by their index."""
    confusion = np.asarray(confusion)
    n = len(class_names)
    cell = max(14, min(48, 720 // max(n, 1)))
    font, small = _font(max(9, cell // 3)), _font(12)
    margin = 60
    legend_width = 12 + 8 * max(len(f"{i}: {name}") for i, name in enumerate(class_names))
    width = margin + n * cell + 20 + legend_width
    height = max(margin + n * cell + 30, 40 + 16 * n)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 8), "rows: true class, columns: predicted", fill="black", font=small)
    row_totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        draw.text((margin - 30, margin + i * cell + cell // 3), str(i), fill="black", font=font)
        draw.text((margin + i * cell + cell // 3, margin - 20), str(i), fill="black", font=font)
        for j in range(n):
            share = confusion[i, j] / row_totals[i, 0]
            shade = int(255 * (1 - share))
            color = (shade, shade, 255) if i == j else (255, shade, shade)
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1,
                   margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=color, outline=(200, 200, 200))
            if confusion[i, j] and cell >= 20:
                draw.text((box[0] + 3, box[1] + cell // 3), str(confusion[i, j]),
                          fill="black" if share < 0.6 else "white", font=font)
    legend_x = margin + n * cell + 20
    for i, name in enumerate(class_names):
        label = f"{i}: {name}"
        try:
            draw.text((legend_x, 40 + 16 * i), label, fill="black", font=small)
        except UnicodeEncodeError:  # the bitmap fallback font is Latin-1 only
            draw.text((legend_x, 40 + 16 * i), f"{i}: {name.encode('ascii', 'replace').decode()}",
                      fill="black", font=small)
    image.save(path)


def summary_line(metrics):
    """"top-1 0.7700  top-5 0.9850  macro-recall 0.7650  loss 0.7120"."""
    line = f"top-1 {metrics['top1']:.4f}"
    if "top5" in metrics:
        line += f"  top-5 {metrics['top5']:.4f}"
    return line + f"  macro-recall {metrics['macro_recall']:.4f}  loss {metrics['loss']:.4f}"


def print_report(metrics, class_names, checkpoint):
    mirrored = " (each averaged with its mirror image)" if metrics["flip_average"] else ""
    print(f"checkpoint {checkpoint}: {metrics['num_examples']} images{mirrored}")
    print(summary_line(metrics))
    width = max(8, max(len(name) for name in class_names))
    print(f"\n{'class':<{width}}  precision  recall     f1  support")
    for row in metrics["per_class"]:
        print(f"{row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
              f"{row['f1']:5.3f}  {row['support']:7d}")
    print("\nconfusion matrix (rows: true, columns: predicted, by class index)")
    confusion = metrics["confusion_matrix"]
    cell = max(4, len(str(max(max(r) for r in confusion))) + 1)
    print(" " * 4 + "".join(f"{j:>{cell}}" for j in range(len(confusion))))
    for i, row in enumerate(confusion):
        print(f"{i:>3} " + "".join(f"{v:>{cell}}" for v in row))


def _some(names, shown=10):
    """A list of names for a one-line message, however many there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def convert_image_dir(image_dir, records_dir, manifest, args):
    """FlowIO.convert of a class-per-folder tree into records_dir, everything in
    the 'train' split; returns the skipped files, reported as FlowIO.py does.

    The class folders are checked first: labels are numbered by sorted folder
    name, so a missing or extra folder would shift every label and the
    accuracy would be silently wrong.
    """
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {image_dir} is not a folder: put one sub-folder "
                               f"of images per class there")
    labels = manifest["labels"]
    folders = list(FlowIO.find_images(image_dir)[0])
    unknown = [name for name in folders if name not in labels]
    missing = [name for name in labels if name not in folders]
    if unknown or missing:
        problems = ([f"not classes of the model: {_some(unknown)}"] if unknown else []) + \
                   ([f"missing: {_some(missing)}"] if missing else [])
        raise UserError(
            f"--image_dir {image_dir} has class folders that do not match the model in "
            f"{args.model_dir} ({'; '.join(problems)}); use one folder per class of "
            f"{os.path.join(args.model_dir, FlowIO.LABELS_FILE)}")
    # The model's --max_side, so the images are seen as in training.
    info = FlowIO.convert(image_dir, records_dir, validation_ratio=0,
                          max_side=manifest["preprocessing"].get("max_side"))
    out = sys.stderr if args.json else sys.stdout  # --json keeps stdout one JSON object
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} file(s):", file=out)
        for entry in info["skipped"]:
            print(f"  {entry['path']}: {entry['reason']}", file=out)
    if info["classes"] != labels:
        empty = [name for name in labels if name not in info["classes"]]
        raise UserError(f"--image_dir {image_dir}: class folder(s) {_some(empty)} "
                               f"have no usable image; the model needs all its classes")
    return info["skipped"]


def evaluate(manifest, checkpoint, args, precision):
    info = FlowIO.load_dataset_info(args.data_dir)
    if info["classes"] != manifest["labels"]:
        raise UserError(
            f"{args.data_dir} has classes {info['classes']} but the model in {args.model_dir} "
            f"was trained on {manifest['labels']}; evaluate on data with the same class folders")
    probabilities, labels, filenames, checkpoint = predict_split(
        manifest, args.model_dir, checkpoint, args.data_dir, args.split, args.batch_size,
        precision)
    expected = info["num_examples"][args.split]
    if len(labels) != expected:
        raise UserError(f"read {len(labels)} {args.split} records from {args.data_dir} "
                        f"but dataset.json lists {expected}: a shard is damaged; "
                        f"re-run FlowIO.py")
    if args.image_dir is not None:
        # Records name files relative to the tree; the user needs paths to open.
        filenames = [os.path.join(args.image_dir, name) for name in filenames]
    metrics = compute_metrics(probabilities, labels, manifest["labels"])
    metrics["checkpoint"] = checkpoint
    metrics["step"] = modeldir.checkpoint_step(checkpoint)
    metrics["weights"] = modeldir.checkpoint_weights(checkpoint)  # raw or moving average
    metrics["precision"] = precision._asdict()
    metrics["flip_average"] = manifest.get("flip_average", False)  # modeldir.build_network
    return metrics, misclassified_rows(probabilities, labels, filenames, manifest["labels"])


def output_files(output_dir):
    return {"confusion_matrix_png": os.path.join(output_dir, "confusion_matrix.png"),
            "misclassified_csv": os.path.join(output_dir, "misclassified.csv"),
            "metrics_json": os.path.join(output_dir, "metrics.json")}


def write_outputs(metrics, misclassified, class_names, files):
    """Writes the files of output_files(); a failure is one line, after the
    metrics were printed, so they are never lost to a full or read-only disk."""
    output_dir = os.path.dirname(files["metrics_json"])
    try:
        _write_outputs(metrics, misclassified, class_names, files)
    except OSError as error:
        raise UserError(f"the metrics are printed above, but --output_dir {output_dir} cannot "
                        f"be written ({cli.reason(error)}): free some space or choose "
                        f"another --output_dir")


def _write_outputs(metrics, misclassified, class_names, files):
    os.makedirs(os.path.dirname(files["metrics_json"]), exist_ok=True)
    draw_confusion_matrix(metrics["confusion_matrix"], class_names, files["confusion_matrix_png"])
    with open(files["misclassified_csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "true", "predicted", "probability"])
        writer.writeheader()
        writer.writerows(misclassified)
    with open(files["metrics_json"], "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1, ensure_ascii=False)


WATCH_POLL_SECS = 2


def watch(args, precision):
    """--watch: evaluates the newest checkpoint whenever there is one newer
    than the last evaluated (tf.train.checkpoints_iterator's rule: one that
    appears and is replaced between two looks is skipped), until none comes
    for --watch_timeout seconds. model.json may appear only with the first
    checkpoint: the watch can start before train.py does."""
    output_dir = args.output_dir or os.path.join(args.model_dir, "eval")
    out = sys.stderr if args.json else sys.stdout  # --json keeps stdout JSON lines
    print(f"watching {args.model_dir} for new checkpoints (stopping after "
          f"{args.watch_timeout:g} s without one)", file=out, flush=True)
    last_step, manifest, writer = None, None, None
    deadline = time.monotonic() + args.watch_timeout
    try:
        while True:
            found = modeldir.list_checkpoints(args.model_dir)
            if found and (last_step is None or modeldir.checkpoint_step(found[0]) > last_step):
                manifest = manifest or modeldir.load_manifest(args.model_dir)
                # The newest when it is loaded, even if train.py has deleted
                # the one just listed (it keeps only the newest few).
                metrics, misclassified = evaluate(manifest, modeldir.LATEST, args, precision)
                last_step = metrics["step"]
                metrics["files"] = output_files(output_dir)
                if args.json:
                    print(json.dumps(dict(metrics, misclassified=misclassified),
                                     ensure_ascii=False), flush=True)
                else:
                    print(f"step {last_step}: {summary_line(metrics)}  "
                          f"({metrics['checkpoint']})", flush=True)
                write_outputs(metrics, misclassified, manifest["labels"], metrics["files"])
                if writer is None:
                    with tf.Graph().as_default():  # the TF1 writer refuses eager mode
                        writer = tf.compat.v1.summary.FileWriter(output_dir)
                writer.add_summary(tf.compat.v1.Summary(value=[
                    tf.compat.v1.Summary.Value(tag=f"{args.split}_{key}",
                                               simple_value=metrics[key])
                    for key in ("top1", "top5", "macro_recall", "loss") if key in metrics]),
                    last_step)
                writer.flush()
                deadline = time.monotonic() + args.watch_timeout
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"no new checkpoint in {args.model_dir} for {args.watch_timeout:g} s; "
                      f"stopped watching", file=out)
                return
            time.sleep(min(WATCH_POLL_SECS, remaining))
    except KeyboardInterrupt:
        print("stopped watching", file=out)
    finally:
        if writer is not None:
            writer.close()


def main():
    args = parse_args()
    precision = hardware.choose_precision(args.precision, purpose="prediction")
    if args.watch:
        if not args.json:
            print(precision)
        return watch(args, precision)
    manifest = modeldir.load_manifest(args.model_dir)
    checkpoints = choose_checkpoints(args.model_dir, args.checkpoint)
    if args.checkpoint != "all":  # the first line: which checkpoint, and why
        print(modeldir.describe_checkpoint(args.model_dir, args.checkpoint),
              file=sys.stderr if args.json else sys.stdout, flush=True)
    if not args.json:  # --json keeps stdout JSON; the precision is in it
        print(precision)
    if args.image_dir is None:
        return report(args, manifest, checkpoints, precision, {})
    with tempfile.TemporaryDirectory(prefix="evaluation-records-") as records_dir:
        skipped = convert_image_dir(args.image_dir, records_dir, manifest, args)
        args.data_dir, args.split = records_dir, "train"
        return report(args, manifest, checkpoints, precision,
                      {"image_dir": imagefile.display_name(os.path.abspath(args.image_dir)),
                       "skipped": skipped})


def report(args, manifest, checkpoints, precision, extra):
    """Evaluates, prints and writes the outputs; extra goes into the JSON."""
    output_dir = args.output_dir or os.path.join(args.model_dir, "eval")
    if args.checkpoint != "all":
        metrics, misclassified = evaluate(manifest, checkpoints[0], args, precision)
        metrics.update(extra)
        metrics["misclassified"] = misclassified
        metrics["files"] = output_files(output_dir)
        if args.json:
            print(json.dumps(metrics, ensure_ascii=False), flush=True)
        else:
            print_report(metrics, manifest["labels"], metrics["checkpoint"])
        write_outputs(metrics, misclassified, manifest["labels"], metrics["files"])
        if not args.json:
            print(f"\n{len(misclassified)} misclassified: {metrics['files']['misclassified_csv']}")
            print(f"confusion matrix: {metrics['files']['confusion_matrix_png']}")
        return
    # --checkpoint all: the seed's "choose the correct model" step.
    table = []
    for checkpoint in checkpoints:
        metrics, _ = evaluate(manifest, checkpoint, args, precision)
        table.append({k: metrics.get(k) for k in ("checkpoint", "step", "weights", "top1", "top5",
                                                  "macro_recall", "loss")})
    best = max(table, key=lambda row: (row["top1"], -row["loss"]))
    for row in table:
        row["best"] = row is best
    if args.json:
        print(json.dumps(dict({"checkpoints": table, "best": best["checkpoint"],
                               "precision": precision._asdict()}, **extra),
                         ensure_ascii=False))
        return
    print(f"{'step':>8}  {'top-1':>6}  {'top-5':>6}  {'macro-recall':>12}  {'loss':>7}  "
          f"checkpoint")
    for row in table:
        top5 = f"{row['top5']:.4f}" if row["top5"] is not None else "     -"
        averaged = " (moving average)" if row["weights"] == modeldir.MOVING_AVERAGE else ""
        print(f"{row['step']:>8}  {row['top1']:.4f}  {top5}  {row['macro_recall']:12.4f}  "
              f"{row['loss']:7.4f}  {row['checkpoint']}{averaged}"
              f"{'  <- best' if row['best'] else ''}")


if __name__ == "__main__":
    cli.run_main(main)
