"""covergen: the band, painted in the style of its own album cover."""

__version__ = "0.1.0"
