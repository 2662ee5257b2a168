"""Pulumi policy pack: the rules every stack must pass (`rules.py`), wrapped for the engine in `__main__`."""
