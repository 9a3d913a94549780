"""Built-in pybullet scenes: layout files (``NAME.yaml``) and their assets."""
