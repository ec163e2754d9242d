"""Guard plugins: checks that can block a turn."""
