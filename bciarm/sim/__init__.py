"""bciarm.sim."""
