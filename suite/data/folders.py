"""Reading a class-per-folder tree: which files belong to which class, and
which cannot be used (files outside any class folder, folders that cannot be
listed, class names that labels.txt cannot hold)."""
import os

from suite.images.finding import LINK_TO_ANCESTOR, is_hidden, is_link_to_ancestor, walk_files
from suite.plumbing.errors import UserError
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
