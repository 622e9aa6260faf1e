"""The validation suite: the paper's claims (PAPER.md section 4) re-measured with seeds.

    linearcnn validate --config cpu            # or: python -m validation --config cpu

Layout (read in this order):

* `configs.py`     — the named sizes: `smoke` (seconds, the test suite), `cpu`, `gpu`.
* `runs.py`        — `Context`: the data, the patch statistics and every trained network of one
                     run, each (arch, width, labels, lr, frozen, seed) trained once and cached.
* `measures.py`    — the few measurements the package does not have (output autocorrelation,
                     test accuracy, mean +- std).
* `experiments.py` — one function per experiment (`EXPERIMENTS`); each returns the numbers of its
                     JSON file and draws its figures. The linear CNN's is `linear_cnn.py`.
* `runner.py`      — runs the named experiments, writes `results/<experiment>.json`, then the report.
* `report.py`      — `REPORT.md` from the JSON alone: one row per published number, with a verdict
                     by explicit rules (`verdict`).
* `claims.py`      — the published numbers and the verdict rules; `report.py` renders them.

The suite calls the `linearcnn` package like any user would and never imports its CLI; it is
installed beside `linearcnn`, whose `validate` command calls `runner.run_validation`.
"""
