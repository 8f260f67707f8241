"""The stages: each reads what an earlier one saved, reuses its own saved result or computes
and saves it. Attack sets (:mod:`.attack_sets`, :mod:`.attack`), the tau sweep (:mod:`.sweep`),
the decoupling grid (:mod:`.grid`), the ROC (:mod:`.roc`) and the security curve (:mod:`.security`)."""
