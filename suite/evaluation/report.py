"""An evaluation's report: the text on stdout, and the files in --output_dir
(confusion_matrix.png, confusion_matrix.csv, misclassified.csv, metrics.json;
report.html is suite.insight.page's).
What is printed and drawn stays bounded for thousands of classes: the most
confused of them; the files hold every class and every non-zero cell."""
import csv
import io
import os

from suite.evaluation.metrics import (CONFUSION_COLUMNS, confusion_submatrix, most_confused,
                                      summary_line)
from suite.insight.figures import confusion_matrix_png
from suite.model.bookkeeping import MOVING_AVERAGE
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write, atomic_write_json

# The classes the printed report and the PNG show at most: the most confused
# ones. 20 columns of counts fit a wide terminal, and a 20 x 20 grid a picture
# any viewer opens; every class and cell is in the files.
SHOWN_CLASSES = 20


def shown_part(metrics, class_names):
    """The classes the printed report and the PNG show (most_confused, at
    most SHOWN_CLASSES) and their confusion_submatrix."""
    shown = most_confused(metrics, class_names, SHOWN_CLASSES)
    return shown, confusion_submatrix(metrics, class_names, shown)


def subset_note(shown, class_names):
    """"the 20 most confused of 2000 classes", or "" when all are shown."""
    if len(shown) == len(class_names):
        return ""
    return f"the {len(shown)} most confused of {len(class_names)} classes"


def print_report(metrics, class_names):
    """The text report: the checkpoint, the summary, the per-class table and
    the confusion matrix, these two of the shown_part only."""
    mirrored = " (each averaged with its mirror image)" if metrics["flip_average"] else ""
    print(f"checkpoint {metrics['checkpoint']}: {metrics['num_examples']} images{mirrored}")
    print(summary_line(metrics))
    shown, matrix = shown_part(metrics, class_names)
    note = subset_note(shown, class_names)
    if note:
        print(f"\nbelow: {note} (those of the biggest confusions); every class is in "
              f"{metrics['files']['metrics_json']}, every cell of the confusion matrix in "
              f"{metrics['files']['confusion_matrix_csv']}")
    index_width = max(3, len(str(shown[-1])))
    width = max(8, max(len(class_names[i]) for i in shown))
    print(f"\n{'#':>{index_width}}  {'class':<{width}}  precision  recall     f1  support")
    for i in shown:
        row = metrics["per_class"][i]
        print(f"{i:>{index_width}}  {row['class']:<{width}}  {row['precision']:9.3f}  "
              f"{row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}")
    print("\nconfusion matrix (rows: true, columns: predicted, by class index)")
    cell = max(index_width, len(str(matrix.max()))) + 1
    print(" " * (index_width + 1) + "".join(f"{i:>{cell}}" for i in shown))
    for i, row in zip(shown, matrix):
        print(f"{i:>{index_width}} " + "".join(f"{v:>{cell}}" for v in row))


def output_files(output_dir):
    return {"confusion_matrix_png": os.path.join(output_dir, "confusion_matrix.png"),
            "confusion_matrix_csv": os.path.join(output_dir, "confusion_matrix.csv"),
            "misclassified_csv": os.path.join(output_dir, "misclassified.csv"),
            "metrics_json": os.path.join(output_dir, "metrics.json"),
            "report_html": os.path.join(output_dir, "report.html")}


def write_outputs(metrics, misclassified, class_names, files):
    """Writes the files of output_files(); a failure is one line, after the
    metrics were printed, so they are never lost to a full or read-only disk."""
    try:
        _write_outputs(metrics, misclassified, class_names, files)
    except OSError as error:
        raise unwritable(files, error)


def unwritable(files, error):
    """The one line for an --output_dir that cannot take the files."""
    output_dir = os.path.dirname(files["metrics_json"])
    return UserError(f"the metrics are printed above, but --output_dir {output_dir} cannot "
                     f"be written ({reason(error)}): free some space or choose another "
                     f"--output_dir")


def _csv_text(rows, columns):
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def _write_outputs(metrics, misclassified, class_names, files):
    os.makedirs(os.path.dirname(files["metrics_json"]), exist_ok=True)
    shown, matrix = shown_part(metrics, class_names)
    note = subset_note(shown, class_names)
    if note:
        note += f"; every cell: {os.path.basename(files['confusion_matrix_csv'])}"
    support = [row["support"] for row in metrics["per_class"]]
    atomic_write(files["confusion_matrix_png"],
                 confusion_matrix_png(matrix, shown, class_names, support, note))
    # Every non-zero cell, one a row: zeros, nearly all of a matrix of
    # thousands of classes, are left out.
    atomic_write(files["confusion_matrix_csv"],
                 _csv_text(metrics["confusion_counts"], CONFUSION_COLUMNS))
    atomic_write(files["misclassified_csv"],
                 _csv_text(misclassified, ["file", "true", "predicted", "probability"]))
    atomic_write_json(files["metrics_json"], metrics, indent=1)


def print_checkpoint_table(table):
    """--checkpoint all: one line per checkpoint (rows of step, weights,
    top1, top5, macro_recall, loss, checkpoint, best), the best marked."""
    print(f"{'step':>8}  {'top-1':>6}  {'top-5':>6}  {'macro-recall':>12}  {'loss':>7}  "
          f"checkpoint")
    for row in table:
        top5 = f"{row['top5']:.4f}" if row["top5"] is not None else "     -"
        averaged = " (moving average)" if row["weights"] == MOVING_AVERAGE else ""
        print(f"{row['step']:>8}  {row['top1']:.4f}  {top5}  {row['macro_recall']:12.4f}  "
              f"{row['loss']:7.4f}  {row['checkpoint']}{averaged}"
              f"{'  <- best' if row['best'] else ''}")
