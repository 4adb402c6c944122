"""loopml: the whole machine-learning lifecycle as one closed loop.

Importing this package is cheap: it does not import MLflow, a web framework or
pandas. Import the submodules you need (``loopml.data``, ``loopml.registry``, ...).
"""

__version__ = "0.1.0"
