"""Where and how work runs: ranks of a torchrun job (:mod:`.distributed`), the device (:mod:`.device`)."""
