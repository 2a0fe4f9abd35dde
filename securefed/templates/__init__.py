"""Commented starting configs that `securefed init` writes (see cli/app.py)."""
