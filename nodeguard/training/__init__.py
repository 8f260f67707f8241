"""Training a model into the registry (:mod:`.train`) from settings resolved from recipes (:mod:`.recipes`)."""
