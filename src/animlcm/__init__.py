"""animlcm: consistency distillation for pose-guided human image animation."""

__version__ = "0.1.0"
