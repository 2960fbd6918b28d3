"""The rules that keep bundled training data and the bundled evaluation suite apart.

Debian packages (and anything else keyed by a stable name) whose hashed name falls in
the held-out bucket go to evaluation only; everything else may go to training. LibreOffice
help paragraphs split the same way by page and paragraph id. Both data builders call
these functions, and a test checks that no text crosses over.
"""

from __future__ import annotations

import hashlib
import re

HELD_OUT_BUCKETS = 5  # one name in five is held out for evaluation


def is_held_out(key: str) -> bool:
    """True when ``key`` (e.g. a Debian package name) is reserved for evaluation."""
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return int(digest, 16) % HELD_OUT_BUCKETS == 0


# one help paragraph in three may go to training (or to a topic task's train split)
HELP_TRAIN_BUCKETS = 3


def is_help_train_side(page: str, paragraph_id: str) -> bool:
    """True when a LibreOffice help paragraph sits on the training side of the split.

    The key is the paragraph's page and id, the same in every language, so a paragraph
    and all its translations fall on one side."""
    digest = hashlib.sha1("\x1f".join(("split", page, paragraph_id)).encode("utf-8")).hexdigest()
    return int(digest, 16) % HELP_TRAIN_BUCKETS == 0


_HELP_SOURCE = re.compile(r":(text/[^#]+)#(\S+)$")


def help_paragraph_key(source: str) -> tuple[str, str] | None:
    """(page, paragraph id) named by a help row's ``source``
    (``debian:<package>=<version>:<page>#<id>``), or None for any other source."""
    match = _HELP_SOURCE.search(source)
    return (match.group(1), match.group(2)) if match else None
