"""The pipeline stages: extract -> distill -> render, and evaluate; each exposes ``run(cfg)``."""
