"""The trainer's support modules: settings, checkpoints, provenance, the host. They count as
artifact code with train_gpt.py and curriculum/."""
