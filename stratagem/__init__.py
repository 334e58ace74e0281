"""stratagem: the front door. `import stratagem as sg` gives the notebook API (see stratagem/api.py)."""

from stratagem.api import *  # noqa: F403
from stratagem.api import __all__ as __all__
