"""Training, evaluation and prediction: the trainer, data sets, augmentation and checkpoints."""
