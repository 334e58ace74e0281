"""Market data: canonical schemas, bar files, validation, synthetic data, resampling, the lake.

Submodules are imported explicitly (``from feeds.files import read_bars``) so importing
``feeds`` stays cheap; see ``docs/feeds.md``.
"""
