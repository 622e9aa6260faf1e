"""The validation suite: the paper's claims (PAPER.md section 4) re-measured with seeds, on one or
more data sets.

    linearcnn validate --config cpu                              # everything under runs/validate/cpu/
    linearcnn validate --config cpu --data builtin --data mnist:DIR --pad 2
    linearcnn validate --config cpu --publish                    # the record: validation/results/, figures/,
                                                                 # validation/REPORT.md, README block
    python -m validation --config cpu                            # the same without the CLI

Outputs (`runner.output_paths`): `results/<data>/<experiment>.json`, `figures/<data>/*.png`,
`REPORT.md`, and the training cache `train/<data>/<arm>/seed<k>/`, all under
`runs/validate/<config>/` unless `--publish` (never with `--config smoke`).

Layout (read in this order):

* `configs.py`     — the named sizes: `smoke` (seconds, the test suite), `cpu`, `gpu`; the paper's
                     training setting and the stopping rule (train accuracy 0.99 / 0.95, epoch cap).
* `runs.py`        — `Context`: the data (optionally padded), the patch statistics of exactly those
                     images and every trained network of one data set, each (arch, width, labels,
                     lr, momentum, frozen, seed) trained once and cached, converged or not.
* `measures.py`    — the few measurements the package does not have (output autocorrelation,
                     mean +- std).
* `experiments.py` — one function per experiment (`EXPERIMENTS`); each returns the numbers of its
                     JSON file and draws its figures. The linear CNN's is `linear_cnn.py`.
* `runner.py`      — runs the named experiments on each data set, writes the JSON, then the report.
* `claims.py`      — the published numbers, each with its own data set, and the verdict rules.
* `cells.py`       — one claim on one data set: a verdict, "not converged" or "not measured".
* `report.py`      — `REPORT.md` and the README block from the JSON alone: one row per claim, one
                     column per data set, the tally; `tables.py` renders each data set's tables
                     (per-arm training runs, both views, theory checks, fits, trajectories).

The suite calls the `linearcnn` package like any user would and never imports its CLI; it is
installed beside `linearcnn`, whose `validate` command calls `runner.run_validation`.
"""
