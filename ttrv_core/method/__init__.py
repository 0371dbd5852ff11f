"""TTRV itself: rewards over the N votes, GRPO on a prompt's G answers, one training step, evaluation,
the collapse guard, what a run changed, and the loop (engine.adapt) that yields it all as events."""
