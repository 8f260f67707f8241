"""The networks (:mod:`.networks`, :mod:`.layers`), the per-sample dopri5 (:mod:`.solver`),
classification with each image solved alone (:mod:`.evaluation`) and loading a registered
model (:mod:`.loading`). Inference code imports from here, never from :mod:`nodeguard.training`."""
