"""The project's fixed class ids (see docs/metrics.md)."""

BACKGROUND = 0
IGNORE_INDEX = 255
PERPLEXED = 5

CLASS_NAMES = ("background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden")
"""Index = class id. Foreground classes are ids 1..4."""

FOREGROUND_IDS = tuple(range(1, len(CLASS_NAMES)))
CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES)}

DISTRACTOR_NAME = "distractor"
TRUTH_CLASS_IDS = {**CLASS_IDS, DISTRACTOR_NAME: PERPLEXED}
"""Class ids of true masks (generated data): a distractor, never annotated, is 5 — the id that
augmentation's `perplexed` annotations give the objects they claim."""
