"""Data sets by name (:mod:`.datasets`: mnist5k, mnist, cifar10) and training augmentation (:mod:`.augment`)."""
