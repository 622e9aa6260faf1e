"""`python -m validation [args]`: the validation suite without the CLI (`validation.runner.main`)."""

from validation.runner import main

raise SystemExit(main())
