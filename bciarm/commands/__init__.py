"""Click commands that live in their own modules; ``bciarm.cli`` registers them."""
