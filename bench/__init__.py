"""fedge's benchmarks: ``make bench`` (``python -m bench``) measures everything side by side in one run and
regenerates docs/BENCHMARKS.md and docs/benchmarks.json. Not part of ``make test``."""
