"""The one rule that keeps bundled training data and the bundled evaluation suite apart.

Debian packages (and anything else keyed by a stable name) whose hashed name falls in
the held-out bucket go to evaluation only; everything else may go to training. Both
data builders call :func:`is_held_out`, and a test checks that no text crosses over.
"""

from __future__ import annotations

import hashlib

HELD_OUT_BUCKETS = 5  # one name in five is held out for evaluation


def is_held_out(key: str) -> bool:
    """True when ``key`` (e.g. a Debian package name) is reserved for evaluation."""
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return int(digest, 16) % HELD_OUT_BUCKETS == 0
