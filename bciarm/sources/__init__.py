"""bciarm.sources."""
