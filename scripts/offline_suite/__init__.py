"""Builders of the bundled offline evaluation suite, one module per task family
(``crosslingual``, ``help_topics``, ``debian``), with the shared text helpers and writers
(``common``), the excluded texts (``exclusion``), the Debian sources (``packages``) and the
suite's README (``readme``). ``scripts/build_offline_suite.py`` runs them."""
