"""suite/plumbing/names.py: a file name is always printable UTF-8."""
from helpers import NOT_UTF8
from suite.plumbing import names


def test_display_name_is_always_printable_utf8():
    assert names.display_name("猫 咪/照片 1.JPG") == "猫 咪/照片 1.JPG"
    assert names.display_name(NOT_UTF8 + ".jpg") == "caf\\xe9.jpg"
    assert names.display_name("a\nb\u2028c\x1b.jpg") == "a\\nb\\u2028c\\x1b.jpg"
    names.display_name(NOT_UTF8 + "\n").encode("utf-8")  # strict: no surrogate left
