"""Jupyter integration for copilot: the ``%%copilot`` magics and the session panel.

>>> %load_ext copilot_jupyter
>>> %%copilot chat -m gpt-4.1
... Explain {df.shape}.

The magics (:mod:`copilot_jupyter.magics`) and the panel share one client and the current
session through :func:`get_state`.
"""

from .magics import CopilotMagics, load_ipython_extension, unload_ipython_extension
from .panel import SessionPanel
from .state import CopilotState, get_state

__all__ = [
    "CopilotMagics",
    "CopilotState",
    "SessionPanel",
    "get_state",
    "load_ipython_extension",
    "unload_ipython_extension",
]
