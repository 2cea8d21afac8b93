"""PLACEHOLDER - please rewrite this file (collision between two helpers).

A second helper with the same brief overwrote this conftest by mistake around 21:17 UTC and has
stopped. See the note in tfmmsearch/serving/client.py. Copy for reference only:
/tmp/serving_helper_duplicate/conftest.py.
"""
