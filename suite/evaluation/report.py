"""An evaluation's report: the text on stdout, and the files in --output_dir
(confusion_matrix.png, misclassified.csv, metrics.json)."""
import csv
import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from suite.evaluation.metrics import summary_line
from suite.model.bookkeeping import MOVING_AVERAGE
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write, atomic_write_json


def _font(size):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def draw_confusion_matrix(confusion, class_names):
    """A labelled confusion-matrix PNG, as bytes. Rows and columns are labelled by class
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
    png = io.BytesIO()
    image.save(png, format="PNG")
    return png.getvalue()


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
                        f"be written ({reason(error)}): free some space or choose "
                        f"another --output_dir")


def _write_outputs(metrics, misclassified, class_names, files):
    os.makedirs(os.path.dirname(files["metrics_json"]), exist_ok=True)
    atomic_write(files["confusion_matrix_png"],
                 draw_confusion_matrix(metrics["confusion_matrix"], class_names))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["file", "true", "predicted", "probability"])
    writer.writeheader()
    writer.writerows(misclassified)
    atomic_write(files["misclassified_csv"], table.getvalue())
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
