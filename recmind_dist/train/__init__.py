"""Training: one process (loop.py) and Ray Train (distributed.py)."""
