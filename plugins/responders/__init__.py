"""Responder plugins: the back ends that write answers."""
