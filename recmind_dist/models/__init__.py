"""Recommender models. All share :class:`recmind_dist.models.base.Recommender`."""
