"""bciarm.drivers."""
