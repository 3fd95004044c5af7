"""Evaluation.py's report.html: one self-contained page (pictures inlined as
data: URIs, no script, no network) with the metrics, the training curves,
the per-class table, the confusion matrix whose cells link to their images,
the most confident mistakes and the label audit's suspects.

What it shows stays bounded for thousands of classes and images: the
classes of the printed report (report.shown_part), THUMBNAILS_PER_CELL
images per cell and MISTAKES of each list; the CSVs beside it hold the rest."""
import base64
import html
import io
import os

import tensorflow as tf
from PIL import Image

from suite.data.contract import shard_paths
from suite.evaluation.metrics import summary_line
from suite.evaluation.report import shown_part, unwritable
from suite.insight.audit import AUDIT_CSV, read_audit
from suite.insight.curves import CURVES_PNG
from suite.insight.figures import shorten
from suite.plumbing.files import atomic_write, open_regular_file

THUMBNAIL_SIDE = 96       # stored; shown at 64 CSS pixels, sharp on a 1.5x screen
THUMBNAILS_PER_CELL = 12
MISTAKES = 48

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{padding:2px 6px;text-align:right}
th{background:#f3f3f3}.name{text-align:left}
table.cm td{width:2.6em;height:2.2em;text-align:center;border:1px solid #eee}
table.cm a{color:inherit;text-decoration:none;font-weight:bold}
figure{display:inline-block;margin:3px;text-align:center;font-size:.7em;width:76px}
figure img{width:64px;height:64px;object-fit:contain;image-rendering:pixelated;
background:#eee;display:block;margin:auto}
.summary{font-size:1.1em;font-family:monospace}.note{color:#666;font-size:.85em}
"""


def image_uri(data, mime):
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail(source):
    """A data: URI of a small copy of an image (encoded bytes or a file
    object), or None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            return image_uri(buffer.getvalue(), "image/jpeg")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def record_thumbnails(data_dir, split, names):
    """{record file name: thumbnail} for the records of a split named in
    `names`, read from the shards (so the page shows the image as trained
    and evaluated, whatever became of the file since)."""
    wanted, found = set(names), {}
    for path in shard_paths(data_dir, split):
        for record in tf.compat.v1.io.tf_record_iterator(path):
            features = tf.train.Example.FromString(record).features.feature
            name = os.fsdecode(features["image/filename"].bytes_list.value[0])
            if name in wanted:
                found[name] = thumbnail(features["image/encoded"].bytes_list.value[0])
        if len(found) == len(wanted):
            break
    return found


def file_thumbnail(path):
    try:
        with open_regular_file(path) as f:
            return thumbnail(f)
    except OSError:
        return None


def figure(uri, caption):
    image = f'<img src="{uri}" alt="">' if uri else '<img alt="not readable">'
    return f"<figure>{image}{caption}</figure>"


def gallery(rows, thumbnails, caption):
    return "".join(figure(thumbnails.get(row["file"]), caption(row)) for row in rows)


def metrics_section(metrics, title):
    mirrored = " (each averaged with its mirror image)" if metrics["flip_average"] else ""
    return (f"<h1>{html.escape(title)}</h1><p>checkpoint {html.escape(metrics['checkpoint'])}: "
            f"{metrics['num_examples']} images{mirrored}</p>"
            f"<p class=summary>{html.escape(summary_line(metrics))}</p>")


def class_table(metrics, shown):
    rows = "".join(
        f"<tr><td>{i}</td><td class=name>{html.escape(row['class'])}</td>"
        f"<td>{row['precision']:.3f}</td><td>{row['recall']:.3f}</td><td>{row['f1']:.3f}</td>"
        f"<td>{row['support']}</td></tr>"
        for i, row in ((i, metrics["per_class"][i]) for i in shown))
    return ("<h2>Per class</h2><table><tr><th>#</th><th>class</th><th>precision</th>"
            f"<th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>")


def confusion_table(matrix, shown, class_names, support):
    """The matrix as a table: a cell's shade is its share of its row's class;
    a mistake's count links to its images below."""
    head = "".join(f"<th title='{html.escape(class_names[i])}'>{i}</th>" for i in shown)
    rows = []
    for r, i in enumerate(shown):
        cells = []
        for c, j in enumerate(shown):
            count = int(matrix[r, c])
            share = count / max(support[i], 1)
            colour = (f"rgba(30,90,200,{share:.2f})" if i == j
                      else f"rgba(220,40,40,{min(1.0, 3 * share):.2f})")
            text = str(count or "")
            if count and i != j:
                text = f"<a href='#cell-{i}-{j}'>{count}</a>"
            cells.append(f"<td style='background:{colour}'>{text}</td>")
        rows.append(f"<tr><th class=name>{i} {html.escape(shorten(class_names[i]))}</th>"
                    f"{''.join(cells)}</tr>")
    return ("<h2>Confusion matrix</h2><p class=note>rows: true class, columns: predicted; "
            "a red count links to its images</p>"
            f"<table class=cm><tr><th></th>{head}</tr>{''.join(rows)}</table>")


def mistaken_cells(misclassified, shown, class_names):
    """{(true name, predicted name): its rows, most confident first} for the
    mistaken cells among the shown classes."""
    shown_names = {class_names[i] for i in shown}
    cells = {}
    for row in misclassified:  # most confident first
        if row["true"] in shown_names and row["predicted"] in shown_names:
            cells.setdefault((row["true"], row["predicted"]), []).append(row)
    return cells


def confusions(cells, shown, class_names, thumbnails):
    """Per mistaken cell (mistaken_cells'), its most confident images."""
    shown_names = {class_names[i]: i for i in shown}
    parts = ["<h2>The confusions, by cell</h2>"]
    for (true, predicted), rows in sorted(cells.items(), key=lambda item: -len(item[1])):
        anchor = f"cell-{shown_names[true]}-{shown_names[predicted]}"
        parts.append(f"<h3 id='{anchor}'>{html.escape(true)} taken for "
                     f"{html.escape(predicted)}: {len(rows)}</h3>")
        parts.append(gallery(rows[:THUMBNAILS_PER_CELL], thumbnails,
                             lambda row: f"p={row['probability']:.2f}"))
    return "".join(parts)


def mistakes_section(misclassified, thumbnails):
    if not misclassified:
        return "<h2>Most confident mistakes</h2><p>none</p>"
    return ("<h2>Most confident mistakes</h2><p class=note>often a wrong label rather than a "
            "wrong model; every mistake is in misclassified.csv</p>"
            + gallery(misclassified[:MISTAKES], thumbnails, lambda row: (
                f"{html.escape(row['true'])} &rarr; {html.escape(row['predicted'])} "
                f"{row['probability']:.2f}")))


def audit_section(audit_rows):
    """The label audit's suspects (Evaluation.py --audit's label_audit.csv
    in the same folder), their thumbnails read from the user's files."""
    if audit_rows is None:
        return ("<h2>Label audit</h2><p class=note>not run: python Evaluation.py --audit "
                "lists the images that look mislabelled</p>")
    shown = audit_rows[:MISTAKES]
    thumbnails = {row["file"]: file_thumbnail(row["file"]) for row in shown}
    return (f"<h2>Label audit: {len(audit_rows)} images look mislabelled</h2>"
            "<p class=note>labelled &rarr; what the model sees; all of them in "
            "label_audit.csv, which FlowIO.py --exclude takes</p>"
            + gallery(shown, thumbnails, lambda row: (
                f"{html.escape(row['label'])} &rarr; {html.escape(row['suggested'])} "
                f"{float(row['suggested_probability']):.2f}")))


def curves_section(curves_png):
    if not os.path.exists(curves_png):
        return ""
    with open(curves_png, "rb") as f:
        return (f"<h2>Training</h2><img style='max-width:100%' alt='training curves' "
                f"src='{image_uri(f.read(), 'image/png')}'>")


def write_report_page(metrics, misclassified, class_names, source, model_dir):
    """report.html in the evaluation's --output_dir, with the label audit's
    suspects when label_audit.csv is there."""
    files = metrics["files"]
    output_dir = os.path.dirname(files["report_html"])
    page = report_page(metrics, misclassified, class_names, shown_part(metrics, class_names),
                       source, model_dir, read_audit(os.path.join(output_dir, AUDIT_CSV)))
    try:
        atomic_write(files["report_html"], page)
    except OSError as error:
        raise unwritable(files, error)


def report_page(metrics, misclassified, class_names, shown_matrix, source, model_dir,
                audit_rows):
    """The page's HTML. shown_matrix: report.shown_part's (classes,
    matrix); source: the evaluation's Source, whose records the thumbnails
    come from; audit_rows: label_audit.csv's rows, or None."""
    shown, matrix = shown_matrix
    cells = mistaken_cells(misclassified, shown, class_names)
    pictured = misclassified[:MISTAKES] + [row for rows in cells.values()
                                           for row in rows[:THUMBNAILS_PER_CELL]]
    record_name = {}
    for row in pictured:
        name = row["file"]
        record_name[name] = os.path.relpath(name, source.image_dir) if source.image_dir else name
    by_record = record_thumbnails(source.data_dir, source.split, set(record_name.values()))
    thumbnails = {file: by_record.get(name) for file, name in record_name.items()}
    support = [row["support"] for row in metrics["per_class"]]
    title = f"Evaluation of {model_dir}"
    body = "".join([
        metrics_section(metrics, title),
        curves_section(os.path.join(model_dir, CURVES_PNG)),
        class_table(metrics, shown),
        confusion_table(matrix, shown, class_names, support),
        mistakes_section(misclassified, thumbnails),
        confusions(cells, shown, class_names, thumbnails),
        audit_section(audit_rows)])
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")
