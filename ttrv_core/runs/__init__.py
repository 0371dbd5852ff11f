"""The run folder: everything a run computed, written as it happens (folder.py), its checkpoints and
resuming from them (checkpoint.py), and the adapter's model card (model_card.py)."""
