"""bciarm.testing."""
