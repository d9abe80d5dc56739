"""Parts of the `make bench` suite: workload, generated rules and the cases it runs.

Modules here import Warroom only inside functions (``bench/throughput.py`` snapshots
the sources before importing them), except ``quix_counter`` and ``plain_avro``, which
never import Warroom: they also run under the benchmark-only venv (.venv-bench).
"""
