"""File names and lists of names as text for one-line messages and reports."""
import os
import unicodedata


def display_name(path):
    """A file name as text for reports and JSON: bytes that are not UTF-8
    (Linux allows any bytes in a name; Python keeps them as lone surrogates,
    which no UTF-8 file or JSON can hold) are written as \\xNN, and control
    characters and line separators as \\n, \\x1b, \\u2028, so a name never
    breaks a report line. Names of ordinary text are unchanged."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def some(names, shown=5):
    """A few names for a one-line message, however many there are:
    "a, b, c, d, e and 7 more"."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(display_name(name) for name in names[:shown]) + more
