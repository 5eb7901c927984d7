"""A test double of Google's pycoral 2.x (NOT the real library; see tests/fake_pycoral/README.md).

It implements the documented API that respect-pass's coral backend uses on
top of the LiteRT CPU interpreter, and it is strict where the real library is
strict (tensor names, segment order, end-of-stream push), so tests of our
adapter fail when the adapter misuses the API. Nothing it times is an Edge
TPU measurement.
"""

__version__ = "2.0.0+fake"
