"""The study kit's code, split by section. Notebooks import it through `utils.py`."""
