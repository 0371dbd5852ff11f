"""Research tools on top of the library: the experiment grid (experiments.py, grid.py), its
report (report.py) and the test-time corruptions it measures (corruptions.py). A user's run
needs none of them: `python -m ttrv_core.research.experiments --help`."""
