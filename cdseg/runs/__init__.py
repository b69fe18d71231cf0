"""A run's life on disk: its folder, resuming it, stopping it safely, writing its checkpoints.

``folder`` and ``checkpoint`` use plain torch only, so the prediction path can read run folders
without importing Lightning; ``resume``, ``interrupt`` and ``checkpoint_io`` plug into Lightning.
"""
