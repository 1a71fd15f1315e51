"""fabula: deep generative models of text as Pyro stories, fitted by swappable inference.

A *story* (:class:`fabula.models.Story`) says how text is generated, a *guide*
(:class:`fabula.guides.Guide`) says how its latents are guessed, and an *inference object*
(:mod:`fabula.inference`) decides how the guess is made.
"""

__version__ = "0.1.0"
