"""Built-in runnable graphs (``bciarm run NAME`` finds ``NAME.yaml`` here)."""
