"""Benchmarks users run on their own hardware: ``run_stream.py bench engine|pipeline|compare``.

- `engine`: one engine alone, per backend, precision and batch size (`streamrec.bench.engine`);
- `pipeline`: N live streams through the real pipeline, and the most streams served in real
  time (`streamrec.bench.pipeline`);
- `compare`: this project against the usual way of running SlowFast, the PySlowFast demo loop
  re-implemented in `streamrec.bench.baseline`, on the same file and weights
  (`streamrec.bench.compare`).

Every run records the machine it ran on and how loaded it was (`machine`), and writes the
same figures to the terminal, a JSON file, a PNG plot and a section of ``BENCHMARKS.md``
(`report`). Benchmarks are scripts, not tests: ``tests/test_bench.py`` only runs short smoke
versions to show they work and that their JSON has every field.
"""
