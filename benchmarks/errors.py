"""The CLI's one error path: which failures are the user's or the environment's (one ``error:`` line, exit 2) and
how they read. Anything else is a bug in grbench and keeps its traceback.

Expected: bad settings (``ConfigError``, a ``ValueError``), bad or missing data (``DataError``, ``FileNotFoundError``),
unknown names (``KeyError``), a result that may not be published (``PublishError``), the filesystem and the network
(``OSError``: a cache dir that is a file, read-only or full, a download that fails, a hub model name with no
network), memory (``MemoryError`` and torch's allocator errors, e.g. from a bad index), and Lightning's
``MisconfigurationException`` (e.g. a GPU asked for on a machine without one). ``--debug`` (or ``GRBENCH_DEBUG=1``)
shows the traceback of these too. This module imports neither torch nor lightning.
"""
from __future__ import annotations

EXPECTED: tuple[type[BaseException], ...] = (KeyError, ValueError, OSError, MemoryError)
#: RuntimeErrors that are the machine's limits, not bugs (torch's allocator, CUDA)
_OOM = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
_LIGHTNING = ("MisconfigurationException",)


def is_expected(error: BaseException) -> bool:
    """Whether ``error`` is a user or environment failure (one line) rather than a bug (a traceback)."""
    if isinstance(error, EXPECTED):
        return True
    if any(kind.__name__ in _LIGHTNING for kind in type(error).__mro__):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error).lower() for s in _OOM)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's own text without its quotes; whitespace runs folded)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split()) or type(error).__name__
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(s in text.lower() for s in _OOM)):
        text = f"out of memory: {text} (a smaller data.batch_size / data.eval_batch_size, or check the index sizes)"
    elif any(kind.__name__ in _LIGHTNING for kind in type(error).__mro__):
        text = f"Lightning: {text} (check trainer.accelerator, trainer.devices and trainer.strategy for this machine)"
    elif isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.filename and \
            str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text
