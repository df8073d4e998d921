"""gftlib: Gradual Fine-Tuning (GFT) for flow matching models.

Conventions: t = 0 is noise (p0 = N(0, I)), t = 1 is data; batches are (n, *shape); a velocity field
is ``field(x, t)`` with ``t`` of shape (n,). See docs/API.md.
"""

__version__ = "0.1.0"
