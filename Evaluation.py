"""Evaluates a trained model on FlowIO.py's validation (or any) TFRecords.

    python Evaluation.py [--model_dir models] [--data_dir data/tfrecords]
                         [--checkpoint PATH|best|latest|all] [--split validation] [--json]
                         [--precision auto|fp32|bf16|fp16]
    python Evaluation.py --image_dir DIR [--model_dir models] [...]
    python Evaluation.py --watch [--watch_timeout 3600] [--model_dir models] [...]
    python Evaluation.py --audit [--model_dir models] [--data_dir data/tfrecords]

Prints top-1 (and top-5 with at least 5 classes) accuracy, macro-recall
(the mean of the per-class recalls: on imbalanced data, how well the rare
classes are found), the loss, a per-class table of precision, recall, F1 and
support, and a confusion matrix; writes confusion_matrix.png,
confusion_matrix.csv (every non-zero cell), misclassified.csv,
metrics.json (every class) and report.html (one page with thumbnails, the
curves and the label audit: suite.insight.page) to --output_dir (default:
MODEL_DIR/eval). With more than 20 classes, the printed tables and the PNG
show the 20 most confused. It evaluates best/'s checkpoint when there is
one, else the newest, and its first line says which and why. `--checkpoint all` evaluates
every checkpoint and marks the best. --json prints one JSON object instead.
Ctrl-C or SIGTERM stops it cleanly, its temporary files removed.

--image_dir evaluates every image of a class-per-folder tree, converted as
FlowIO.py would into a temporary folder. --watch evaluates each new
checkpoint as train.py writes it, as TF-slim's evaluation loop does (a
model_dir emptied and trained again included), and writes TensorBoard
summaries beside training's.

--audit ranks the images of both splits of --data_dir that probably carry
the wrong label (confident learning on the model's probabilities:
suite.insight.audit) and writes them to label_audit.csv in --output_dir,
which FlowIO.py --exclude takes to leave them out of the next conversion.
"""
import json
import os
import sys

from suite.plumbing import environment

if __name__ == "__main__":
    environment.configure(verbose="--verbose" in sys.argv)  # before TensorFlow loads

from suite.data.contract import SPLITS
from suite.evaluation.evaluate import Source, choose_checkpoints, convert_image_dir, evaluate
from suite.evaluation.report import (output_files, print_checkpoint_table, print_report,
                                     write_outputs)
from suite.evaluation.watch import watch
from suite.hardware.precision import choose_precision
from suite.insight.audit import AUDIT_CSV, audit, print_audit, write_audit
from suite.insight.page import write_report_page
from suite.model.checkpoints import describe_checkpoint
from suite.model.manifest import load_manifest
from suite.plumbing import flags
from suite.plumbing.errors import run_main
from suite.plumbing.files import temporary_folder
from suite.plumbing.names import display_name
from suite.plumbing.signals import signals_end_cleanly


def parse_args(argv=None):
    parser = flags.ArgumentParser(description="Evaluate a trained model.")
    flags.add_model_dir(parser, "train.py's output folder")
    parser.add_argument("--data_dir", default=None,
                        help=f"FlowIO.py's output folder to evaluate on "
                             f"(default: {flags.DEFAULT_DATA_DIR})")
    parser.add_argument("--split", default=None, choices=SPLITS,
                        help="split of --data_dir (default: validation)")
    parser.add_argument("--image_dir", default=None,
                        help="evaluate every image of this class-per-folder tree instead "
                             "(converted as FlowIO.py does, into a temporary folder)")
    flags.add_checkpoint(parser, all_of_them=True)
    parser.add_argument("--batch_size", type=flags.positive_int, default=64,
                        help="images per run of the network (default: %(default)s)")
    flags.add_precision(parser, "prediction")
    parser.add_argument("--output_dir", default=None,
                        help="where the PNG, CSVs and JSON go (default: MODEL_DIR/eval)")
    flags.add_json(parser, "one JSON object")
    parser.add_argument("--watch", action="store_true",
                        help="evaluate each new checkpoint of --model_dir as it appears")
    parser.add_argument("--watch_timeout", type=flags.positive_float, default=3600,
                        help="with --watch: stop after this many seconds without a new "
                             "checkpoint (default: %(default)s)")
    parser.add_argument("--audit", action="store_true",
                        help="list the images of --data_dir (both splits) that look "
                             "mislabelled, in OUTPUT_DIR/label_audit.csv")
    args = parser.parse_args(argv)
    if args.audit and (args.watch or args.image_dir or args.split or args.checkpoint == "all"):
        parser.error("--audit looks at every image of --data_dir, both splits, with one "
                     "checkpoint; it takes no --watch, --image_dir, --split or --checkpoint all")
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
    return args


def main():
    with signals_end_cleanly("nothing more evaluated or written"):
        evaluation()


def evaluation():
    args = parse_args()
    precision = choose_precision(args.precision, purpose="prediction")
    output_dir = args.output_dir or os.path.join(args.model_dir, "eval")
    out = sys.stderr if args.json else sys.stdout  # --json keeps stdout JSON
    source = Source(args.data_dir or flags.DEFAULT_DATA_DIR, args.split or "validation",
                    args.batch_size)
    if args.watch:
        if not args.json:
            print(precision)
        return watch(args.model_dir, source, precision, output_dir, args.watch_timeout,
                     args.json)
    manifest = load_manifest(args.model_dir)
    checkpoints = choose_checkpoints(args.model_dir, args.checkpoint)
    if args.checkpoint != "all":  # the first line: which checkpoint, and why
        print(describe_checkpoint(args.model_dir, args.checkpoint), file=out, flush=True)
    if not args.json:  # --json keeps stdout JSON; the precision is in it
        print(precision)
    if args.audit:
        return label_audit(args, manifest, precision, output_dir, out)
    if args.image_dir is None:
        return report(args, manifest, checkpoints, source, precision, output_dir, {})
    with temporary_folder("evaluation-records-") as records_dir:
        skipped = convert_image_dir(args.image_dir, records_dir, manifest, args.model_dir, out)
        source = Source(records_dir, "train", args.batch_size, image_dir=args.image_dir)
        return report(args, manifest, checkpoints, source, precision, output_dir,
                      {"image_dir": display_name(os.path.abspath(args.image_dir)),
                       "skipped": skipped})


def label_audit(args, manifest, precision, output_dir, out):
    """--audit: label_audit.csv in output_dir, its lines on `out`, and with
    --json one JSON object on stdout."""
    data_dir = args.data_dir or flags.DEFAULT_DATA_DIR
    result = audit(manifest, args.model_dir, args.checkpoint, data_dir, precision,
                   args.batch_size)
    path = os.path.join(output_dir, AUDIT_CSV)
    write_audit(result.rows, path)
    print_audit(result, path, data_dir, out)
    if args.json:
        print(json.dumps({"checkpoint": result.checkpoint, "images": result.images,
                          "flagged": len(result.rows), "label_audit_csv": path,
                          "precision": precision._asdict()}, ensure_ascii=False), flush=True)


def report(args, manifest, checkpoints, source, precision, output_dir, extra):
    """Evaluates, prints and writes the outputs; extra goes into the JSON."""
    if args.checkpoint == "all":  # TF-slim's "choose the correct model" step
        return report_all(args, manifest, checkpoints, source, precision, extra)
    metrics, misclassified = evaluate(manifest, args.model_dir, checkpoints[0], source,
                                      precision)
    metrics.update(extra)
    metrics["misclassified"] = misclassified
    metrics["files"] = output_files(output_dir)
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False), flush=True)
    else:
        print_report(metrics, manifest["labels"])
    write_outputs(metrics, misclassified, manifest["labels"], metrics["files"])
    write_report_page(metrics, misclassified, manifest["labels"], source, args.model_dir)
    if not args.json:
        print(f"\n{len(misclassified)} misclassified: {metrics['files']['misclassified_csv']}")
        print(f"confusion matrix: {metrics['files']['confusion_matrix_png']}, every cell: "
              f"{metrics['files']['confusion_matrix_csv']}")
        print(f"report page: {metrics['files']['report_html']}")


def report_all(args, manifest, checkpoints, source, precision, extra):
    """--checkpoint all: every checkpoint's metrics, the best marked."""
    table = []
    for checkpoint in checkpoints:
        metrics, _ = evaluate(manifest, args.model_dir, checkpoint, source, precision)
        table.append({k: metrics.get(k) for k in ("checkpoint", "step", "weights", "top1", "top5",
                                                  "macro_recall", "loss")})
    best = max(table, key=lambda row: (row["top1"], -row["loss"]))
    for row in table:
        row["best"] = row is best
    if args.json:
        print(json.dumps(dict({"checkpoints": table, "best": best["checkpoint"],
                               "precision": precision._asdict()}, **extra),
                         ensure_ascii=False))
    else:
        print_checkpoint_table(table)


if __name__ == "__main__":
    run_main(main)
