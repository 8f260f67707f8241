"""Tolerance randomization (:mod:`.randomization`), votes kept in the result store
(:mod:`.votes`), and defending image files (:mod:`.files`)."""
