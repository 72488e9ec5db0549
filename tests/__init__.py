"""glossy's tests: the fast tier (`-m "not slow"`, generated fixtures, one torch thread) and the slow tier."""
