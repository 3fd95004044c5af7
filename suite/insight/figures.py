"""The suite's pictures, drawn with matplotlib: the confusion matrix
(Evaluation.py) and the training curves (train.py). PNG bytes out, for
files.atomic_write.

matplotlib's object API with its Agg canvas, never pyplot: no display is
needed or looked for, nothing global is kept between figures, and a figure
is freed when it goes out of scope. matplotlib is imported when a picture
is first drawn (half a second), not by every script that could draw one."""
import io

import numpy as np

# Cells wide enough for a count of 4 digits at the font size below.
CELL_INCHES = 0.42
DPI = 100


def png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def confusion_matrix_png(matrix, shown, class_names, support, note=""):
    """The confusion matrix of the classes `shown` (indices; matrix: their
    confusion_submatrix), so its size is bounded however many classes there
    are. Rows and columns are labelled by class index, with an index -> name
    legend beside the grid, so a name of any length keeps the grid square.
    A cell's shade is its share of all the images of its row's class
    (support: images per class, by index), shown or not; the diagonal in
    blue, the mistakes in red."""
    from matplotlib.figure import Figure
    n = len(shown)
    share = matrix / np.maximum(np.asarray([support[i] for i in shown], float), 1)[:, None]
    diagonal = np.eye(n, dtype=bool)
    grid = max(3.0, n * CELL_INCHES)
    legend = "\n".join(f"{i}: {shorten(class_names[i])}" for i in shown)
    width = grid + 1.4 + 0.07 * max(len(line) for line in legend.splitlines())
    figure = Figure(figsize=(width, grid + 1.4))
    axes = figure.add_axes([0.9 / width, 0.6 / (grid + 1.4), grid / width, grid / (grid + 1.4)])
    axes.imshow(np.ma.masked_where(~diagonal, share), cmap="Blues", vmin=0, vmax=1)
    axes.imshow(np.ma.masked_where(diagonal, share), cmap="Reds", vmin=0, vmax=1)
    labels = [str(i) for i in shown]
    axes.set_xticks(range(n), labels, fontsize=8, rotation=90 if n > 12 else 0)
    axes.set_yticks(range(n), labels, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("rows: true class, columns: predicted" + (f"\n{note}" if note else ""),
                   fontsize=9)
    for row in range(n):
        for column in range(n):
            if matrix[row, column]:
                axes.text(column, row, str(matrix[row, column]), ha="center", va="center",
                          fontsize=7, color="white" if share[row, column] > 0.6 else "black")
    figure.text((grid + 1.1) / width, 0.98, legend, va="top", fontsize=8)
    return png_bytes(figure)


def shorten(name, length=32):
    return name if len(name) <= length else name[:length - 1] + "…"


def curves_png(rows):
    """The training curves by epoch, from curves.json's rows ({"epoch",
    "loss", "train_top1", "validation_top1" and
    "validation_top1_moving_average", "learning_rate"}, each but "epoch"
    possibly absent): loss, top-1 (training and validation) and the
    learning rate, one panel each."""
    from matplotlib.figure import Figure
    figure = Figure(figsize=(11, 3.4))
    panels = figure.subplots(1, 3)
    epochs = [row["epoch"] for row in rows]

    def plot(axes, key, label, **style):
        points = [(e, row[key]) for e, row in zip(epochs, rows) if row.get(key) is not None]
        if points:
            axes.plot(*zip(*points), label=label, marker="o" if len(points) < 30 else None,
                      markersize=3, **style)

    plot(panels[0], "loss", "training loss")
    plot(panels[1], "train_top1", "training (augmented batches)")
    plot(panels[1], "validation_top1", "validation")
    plot(panels[1], "validation_top1_moving_average", "validation, moving average")
    plot(panels[2], "learning_rate", "learning rate")
    for axes, title in zip(panels, ("loss", "top-1", "learning rate")):
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    panels[1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return png_bytes(figure)
