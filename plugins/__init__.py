"""Built-in plugins: guards (safety), responders (LLM back ends), registered via entry points."""
