"""Finding image files: the files of a folder tree, and what a command line
names (files, folders, glob patterns). Nothing is opened here: whether a file
is a usable image is suite.images.decoding's to say."""
import glob
import os

IGNORED_FILES = {"Thumbs.db", "desktop.ini"}  # what file managers leave in folders
LINK_TO_ANCESTOR = "a link to a folder that holds it: not followed (it would loop)"


def is_link_to_ancestor(path):
    """Whether path resolves to a folder that holds it: its own folder or
    one above (`self -> .`, `loop -> ..`)."""
    real, holder = os.path.realpath(path), os.path.realpath(os.path.dirname(path))
    return real == holder or holder.startswith(real + os.sep)


def is_hidden(name):
    return name.startswith(".") or name in IGNORED_FILES


def walk_files(folder):
    """(every non-hidden file under folder, sorted; folders that could not be
    listed or were not followed, as {"path", "reason"}).

    Symlinked folders are followed, except into a folder already walked (its
    files are listed once), and a link to a folder that holds it or to one
    above `folder` (a symlink loop, or a link that would pull other classes
    into this one), which is reported as LINK_TO_ANCESTOR; so the walk
    always ends. Entries that are not
    regular files (pipes, sockets, devices) are listed too, never opened:
    suite.images.decoding.read_image_file refuses them by path, so they are reported.
    """
    top = os.path.realpath(folder)
    seen_dirs = set()
    found, unlisted = [], []

    def unreadable(error):  # os.walk would skip such a folder silently
        unlisted.append({"path": error.filename,
                         "reason": f"cannot list folder: {error.strerror or error}"})

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        loops = root != folder and (top.startswith(real + os.sep) or is_link_to_ancestor(root))
        if loops or real in seen_dirs:
            if loops:
                unlisted.append({"path": root, "reason": LINK_TO_ANCESTOR})
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found.extend(os.path.join(root, f) for f in files if not is_hidden(f))
    return sorted(found), unlisted


def expand_inputs(inputs):
    """Files, folders (recursively, hidden entries skipped) and glob patterns ->
    (paths, problems) where problems are inputs that matched nothing and
    folders that could not be listed. Entries that are not regular files (a
    pipe, a socket, a device) are kept, not opened: Classifier.predict
    reports each by path (suite.images.decoding.read_image_file refuses them
    unread)."""
    paths, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found, unlisted = walk_files(item)
            problems.extend({"path": u["path"], "error": u["reason"]} for u in unlisted)
            if not found and not unlisted:
                problems.append({"path": item, "error": "folder has no files"})
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            # Everything a pattern matches but folders (a pattern names files).
            matches = sorted(p for p in glob.glob(item, recursive=True) if not os.path.isdir(p))
            if not matches:
                problems.append({"path": item, "error": "pattern matches no file"})
            paths.extend(matches)
        else:
            problems.append({"path": item, "error": "no such file or folder"})
    return paths, problems
