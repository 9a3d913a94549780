"""bciarm.record."""
