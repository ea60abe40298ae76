"""The project's fixed class ids (see shared/spec/xai-metrics.md)."""

BACKGROUND = 0
IGNORE_INDEX = 255
PERPLEXED = 5

CLASS_NAMES = ("background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden")
"""Index = class id. Foreground classes are ids 1..4."""

FOREGROUND_IDS = tuple(range(1, len(CLASS_NAMES)))
CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES)}
