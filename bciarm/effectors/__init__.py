"""bciarm.effectors."""
