"""GRPO (TRL's GRPOTrainer) with the filter's verifiers as reward functions: R1-Zero's RL stage."""
