"""Tables (:mod:`.tables`) and pictures (:mod:`.plots`) of the stages' reports."""
