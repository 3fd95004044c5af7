"""Reading a class-per-folder tree: which files belong to which class, and
which cannot be used (files outside any class folder, folders that cannot be
listed, class names that labels.txt cannot hold); and the files a user
leaves out of a conversion by listing them (FlowIO.py --exclude)."""
import csv
import io
import os

from suite.images.finding import LINK_TO_ANCESTOR, is_hidden, is_link_to_ancestor, walk_files
from suite.plumbing.errors import UserError
from suite.plumbing.files import open_regular_file
from suite.plumbing.names import display_name


def find_images(image_dir):
    """{class name: [file paths]} for a class-per-folder tree, and what cannot
    be used as {"path", "reason"}: files outside any class folder (they cannot
    be labelled), folders that could not be listed, and links to image_dir
    or above it (a folder `self -> .` would make every image a member of two
    classes, a label conflict for each)."""
    try:
        entries = sorted(os.listdir(image_dir))
    except OSError as error:
        raise UserError(f"cannot list {display_name(image_dir)}: "
                        f"{error.strerror or error}; check its permissions")
    classes, skipped = {}, []
    for entry in entries:
        path = os.path.join(image_dir, entry)
        if is_hidden(entry):
            continue
        if os.path.isdir(path) and is_link_to_ancestor(path):
            skipped.append({"path": path, "reason": LINK_TO_ANCESTOR})
        elif os.path.isdir(path):
            classes[entry], unlisted = walk_files(path)
            skipped.extend(unlisted)
        else:
            skipped.append({"path": path, "reason": "not inside a class folder"})
    return classes, skipped


def class_name_problem(name):
    """Why a class folder's name cannot be a line of labels.txt, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as surrogates
        return "is not valid UTF-8"
    if not name.strip():
        return "is blank"
    if name.splitlines() != [name]:  # every separator str.splitlines knows, not only \n
        return "contains a line break"
    return None


def find_files(image_dir, validation_dir=None):
    """Every file of the tree(s): (files, skipped, class folders).

    files: one dict per file with "tree" ("train" for --image_dir,
    "validation" for --validation_dir), "class_name", "path" and "filename"
    (the path relative to its tree, stored in the record). A class folder
    whose name cannot be a line of labels.txt is a UserError, raised before
    anything is written.
    """
    trees = [("train", image_dir)] + ([("validation", validation_dir)] if validation_dir else [])
    files, skipped, class_folders = [], [], []
    for tree, root in trees:
        classes, unusable = find_images(root)
        if tree == "train":
            if not classes:
                raise UserError(f"--image_dir {display_name(root)} has no class folders: put "
                                f"one sub-folder of images per class there")
            class_folders = list(classes)
        bad = [(name, problem) for name in classes
               if (problem := class_name_problem(name)) is not None]
        if bad:
            raise UserError(
                f"{display_name(root)}: class folder name(s) that labels.txt cannot hold: "
                + "; ".join(f"'{display_name(name)}' {problem}" for name, problem in bad)
                + ": rename them (a class name is one line of UTF-8 text)")
        skipped.extend(unusable)
        for class_name, paths in classes.items():
            files.extend({"tree": tree, "class_name": class_name, "path": p,
                          "filename": os.path.relpath(p, root)} for p in paths)
    if not files:
        raise UserError(f"--image_dir {display_name(image_dir)} has no files in its class "
                        f"folders")
    return files, skipped, class_folders


# The columns of a CSV that name files: Evaluation.py's misclassified.csv
# writes "file"; "path" is the usual name elsewhere.
PATH_COLUMNS = ("file", "path")
MAX_EXCLUDE_BYTES = 256 * 2**20  # a list of millions of paths; not a file read without end


def read_exclude_list(list_path):
    """The paths of a --exclude LIST: a CSV with a "file" or "path" column
    (Evaluation.py's misclassified.csv, a label audit's output), or a plain
    list, one path a line (blank lines and lines starting with # ignored).
    Raises UserError naming the file and the fix."""
    try:
        with open_regular_file(list_path) as f:  # a named pipe is refused, not waited on
            data = f.read(MAX_EXCLUDE_BYTES + 1)
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or "not UTF-8 text"
        raise UserError(f"--exclude {display_name(list_path)}: cannot read it ({why}): give a "
                        f"CSV with a 'file' or 'path' column, or one path a line")
    if len(data) > MAX_EXCLUDE_BYTES:
        raise UserError(f"--exclude {display_name(list_path)} is over {MAX_EXCLUDE_BYTES:,} "
                        f"bytes: not a list of paths")
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]), [])
    column = next((name for name in PATH_COLUMNS if name in header), None)
    if column:  # a CSV; anything else is a plain list (a path may hold a comma)
        return [row[column] for row in csv.DictReader(io.StringIO(text)) if row.get(column)]
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def exclude_files(files, listed, image_dir, validation_dir=None):
    """files (find_files's) without those listed: (kept, excluded paths,
    listed entries that named no file of the trees). An entry names a file
    by its path as given (absolute or from the current folder) or relative
    to --image_dir or --validation_dir, links resolved."""
    roots = [os.getcwd(), image_dir] + ([validation_dir] if validation_dir else [])
    wanted = {}
    for entry in listed:
        for root in roots:
            wanted.setdefault(os.path.realpath(os.path.join(root, entry)), entry)
    kept, excluded, matched = [], [], set()
    for file in files:
        entry = wanted.get(os.path.realpath(file["path"]))
        if entry is None:
            kept.append(file)
        else:
            excluded.append(file["path"])
            matched.add(entry)
    unmatched = [entry for entry in dict.fromkeys(listed) if entry not in matched]
    return kept, excluded, unmatched
