"""Experiment drivers of mtl_jax (Flax-examples style: ml_collections configs, absl flags).

* ``python -m experiments.train --config experiments/configs/<name>.py --workdir runs/<run>``
* ``python -m experiments.compare``: methods x seeds + single-task baselines, table and plots
* ``python -m experiments.scalarization``: the simplex grid search of fixed weights
* ``python -m experiments.temperature_sweep``: UW-SO over a grid of temperatures

See docs/experiments.md.
"""
