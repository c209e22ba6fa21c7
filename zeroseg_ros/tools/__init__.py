"""Tools on top of everything: the ``zeroseg`` command line, the benchmarks, the evaluation and the demo job."""
