"""Second backends of the stories, for NumPyro's NUTS: hand-written JAX twins and their registry
(:mod:`fabula.backends.numpyro`), the generic twin that calls any torch story from JAX
(:mod:`fabula.backends.callback`), and the float64 parity check of a twin
(:mod:`fabula.backends.parity`). Importing them imports JAX."""
