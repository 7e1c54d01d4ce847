"""Full-ranking evaluation."""
