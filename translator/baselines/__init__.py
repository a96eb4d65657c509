"""Training-free baselines: hard prompts read off soft prompts without training a translator.

  inspect_baseline   InSPEcT (Ramati et al., 2024): the soft prompt's hidden states patched into a few-shot
                     list of task descriptions, the LM completes the description; layer pair chosen on
                     training prompts
  nearest_token      each soft vector -> the token whose embedding has the highest cosine

The mechanics are described in implementation.md ("Baselines").
"""

from translator.baselines import inspect_baseline, nearest_token
from translator.baselines.inspect_baseline import InspectConfig, describe, inspect_config, select_layers
from translator.baselines.nearest_token import project

__all__ = ["inspect_baseline", "nearest_token", "InspectConfig", "describe", "inspect_config", "select_layers",
           "project"]
