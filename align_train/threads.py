"""CPU threads of training and evaluation: the rule of :mod:`schemas.threads`, which ``curate`` shares.

``set_threads(cfg.threads)`` at the start of a run gives the chosen count to torch and to the BLAS and
OpenMP pools of the process.
"""

from schemas.threads import Threads, choose_threads, default_threads, set_threads

__all__ = ["Threads", "choose_threads", "default_threads", "set_threads"]
