"""LoRA continued pretraining and SFT on dataset versions, with lineage, audit and checkpoint tools.

Importing the package turns off the Hugging Face hub's telemetry (TRL's trainers and
transformers ping the hub when they start): the workbench trains offline and tells no one
what it trains, unless the user opts in with SATSANG_HF_TELEMETRY=1.
"""

import os
import sys

TELEMETRY_ENV = "SATSANG_HF_TELEMETRY"

if os.environ.get(TELEMETRY_ENV) != "1":
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    # huggingface_hub reads the variable once, when it is imported: if it already is, set its constant too.
    _hub_constants = sys.modules.get("huggingface_hub.constants")
    if _hub_constants is not None:
        _hub_constants.HF_HUB_DISABLE_TELEMETRY = True
