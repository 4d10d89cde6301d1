"""Evaluation: bpb sums, window plans, predictors, the score-first loop, scoring an artifact."""
