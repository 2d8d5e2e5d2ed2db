"""The animation network and its components (one definition for teacher, student, render and eval)."""
