"""The model layer: configs and every λ/τ/γ limit, the dial, blocks and partitions, locality
attention, the transformer with its adaptive head, the tokenizer and checkpoints. It imports
nothing from the layers above (analysis, experiments)."""
