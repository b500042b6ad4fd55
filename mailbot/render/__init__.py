"""Templates: the catalogue and its Jinja environment, the variables they are given, checks."""
