"""Safety building blocks shared by the guard plugins: decoders, PII detectors, the intent classifier."""
