"""glossy_datasets: one loader per dataset (with its options), downloads and checksums, the synthetic
generator and the registry. Imports nothing of glossy's other packages."""
