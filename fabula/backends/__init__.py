"""Second backends of the stories (see :mod:`fabula.backends.numpyro`)."""
