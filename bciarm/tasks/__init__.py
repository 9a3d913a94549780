"""bciarm.tasks."""
