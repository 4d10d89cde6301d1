"""Training: the trainer loop, its clock, checkpoints, weight averaging and the result schema."""
