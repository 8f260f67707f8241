"""The science as pure functions: a model, tensors, votes or attack sets in, typed results out.

Nothing here reads or writes a file, opens the registry or the result store, asks for the
process's rank, or draws. The stages (:mod:`nodeguard.stages`) fetch what these functions
take (attack sets and votes, from the result store) and keep what they return. Attack sets
as values (:mod:`.attack_sets`), the tau table's cells (:mod:`.sweep`), the ROC of the
defense (:mod:`.roc`), the security evaluation's judging (:mod:`.security`) and its checks
of itself (:mod:`.indicators`).
"""
