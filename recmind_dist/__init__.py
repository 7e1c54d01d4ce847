"""recmind-dist: LLM-enhanced graph recommenders (RecMind, GAT+LLM, LLMRec) on Ray."""

__version__ = "0.1.0"
