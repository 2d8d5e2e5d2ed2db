"""The README's "Python API" example runs as written (on the built-in student, in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should hold one runnable example"
    return blocks[0]


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    from animlcm.models.io import load_model_folder

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_api_example(), str(README), "exec"), namespace)
    frames = namespace["frames"]
    assert len(frames) == 8 and frames[0].size == (96, 128)
    assert (tmp_path / "frame0.png").stat().st_size > 0
    assert (tmp_path / "my_student" / "model_index.json").is_file()
    assert load_model_folder(tmp_path / "my_student").kind == "student"
