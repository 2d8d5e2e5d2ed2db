"""Moore-AnimateAnyone / Champ interop: import their checkpoints as teachers, export students in their layout.

- ``layouts``: the formats' file tables and key rules (pure names);
- ``files``: reading/writing ``.pth`` (``weights_only``) and ``.safetensors``;
- ``mapping``: strict matching onto the network's state dict, and the inverse for export;
- ``importer`` / ``exporter``: the ``teacher import`` and ``export`` stages (``run(cfg)``).
"""
