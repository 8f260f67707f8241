"""What nodeguard keeps on disk: atomic files (:mod:`.files`), the model registry
(:mod:`.registry`), the keyed result store (:mod:`.results`), image files (:mod:`.images`)."""
