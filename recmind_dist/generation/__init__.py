"""Generative LM backends, the prompt cache and the recommendation tasks built on them."""
