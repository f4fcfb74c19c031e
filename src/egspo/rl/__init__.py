"""RL post-training: the trainer loop, its checkpoints, rollout policy and prompt order."""
