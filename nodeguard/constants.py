"""The names nodeguard writes and reads, in one place: file and folder names, result kinds, environment variables.

The cache root (``NODEGUARD_HOME``) holds::

    index.json                                  the registry's index
    defense.key                                 the secret key of the defense's draws
    models/NAME/config.yaml, checkpoint.pt, metrics.json, history.json, .busy.lock
    models/NAME/results/KIND/LABEL-DIGEST/      one result of the keyed result store:
        result.pt | result.json, .lock, and the stage's own files (summary.json, shard files)
"""

from __future__ import annotations

__version__ = "0.16.0"  # the package's version (pyproject.toml reads it from here)

# environment variables
HOME_VARIABLE = "NODEGUARD_HOME"  # the cache root
DATA_VARIABLE = "NODEGUARD_DATA"  # the data sets root
XDG_CACHE_VARIABLE = "XDG_CACHE_HOME"  # the cache root's parent when NODEGUARD_HOME is unset
DEBUG_VARIABLE = "NODEGUARD_DEBUG"  # 1: errors keep their traceback
COMPILE_VARIABLE = "NODEGUARD_COMPILE"  # 1: the per-sample solver calls a torch.compile'd ODE function

# the registry
INDEX_FILE = "index.json"
MODELS_FOLDER = "models"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
RESULTS_FOLDER = "results"
BUSY_LOCK_FILE = ".busy.lock"
DEFENSE_KEY_FILE = "defense.key"  # the secret key of the defense's draws (owner-only)

# the result store: one folder per result, these files in it
RESULT_TENSORS = "result.pt"
RESULT_JSON = "result.json"
LOCK_FILE = ".lock"
SUMMARY_FILE = "summary.json"  # an attack set's report, for people reading the folder

# result kinds (the KIND folders of the result store, and the tag of tagged torch files)
ATTACK_SET_KIND = "attack_set"
ATTACK_SHARD_KIND = "attack_shard"  # one rank's finished batches of an attack set being made
SWEEP_CELL_KIND = "sweep_cell"
VOTES_KIND = "votes"
SECURITY_KIND = "security"
CERTIFY_KIND = "certify"  # randomized smoothing's certificates of a model's test images
CERTIFY_SHARD_KIND = "certify_shard"  # one rank's certified images of certificates being made

# the tag of every torch file nodeguard saves
FILE_FORMAT = "nodeguard-checkpoint"
