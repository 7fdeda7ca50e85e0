"""Learning: datasets, the base learners, the stacking meta-model, training and evaluation."""
