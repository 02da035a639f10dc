"""Keep the default output to what a benchmark user needs: the libraries' tips, device banners and deprecation
notices are dropped (``--debug`` keeps everything). Our own lines, Lightning's real warnings (``max_time`` reached,
checkpoint restored) and every error stay. Installs filters only; imports neither torch nor lightning."""
from __future__ import annotations

import logging
import os
import re
import warnings

#: Lightning ``rank_zero_info`` lines that are advertising or banners, not facts about the run
_LIGHTNING_NOISE = re.compile(
    r"^(💡 Tip:|GPU available:|TPU available:|HPU available:|IPU available:|LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES|"
    r"Loading `train_dataloader` to estimate number of stepping batches)")
#: warnings from the libraries about their own APIs, or about settings the suite makes on purpose
_WARNING_NOISE = (
    r".*is deprecated.*", r".*will be removed in.*", r".*does not have many workers.*",
    r".*smaller than the logging interval.*", r".*`isinstance\(treespec, LeafSpec\)`.*",
)
_LIBRARIES = r"(transformers|torch|lightning|lightning_fabric|pytorch_lightning|peft|torchmetrics|huggingface_hub)(\.|$)"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _LIGHTNING_NOISE.match(record.getMessage().lstrip())


def quiet_libraries() -> None:
    """Install the filters (idempotent)."""
    for message in _WARNING_NOISE:
        warnings.filterwarnings("ignore", message=message, module=_LIBRARIES)
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in log.filters):
            log.addFilter(_DropNoise())
    # transformers' own logger: its one-time deprecation and resize notices ("past_key_values is deprecated", "the new
    # embeddings will be initialized from a multivariate normal ..."); its errors still show
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")      # read when transformers configures its logger
    logging.getLogger("transformers").setLevel(logging.ERROR)
