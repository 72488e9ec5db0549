"""glossy_cli: the `glossy` command and its pipeline: dispatch, configuration, training, the evaluation
stages, the bounds maths, runs, table and figure."""
