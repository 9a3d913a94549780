"""bciarm.bus."""
