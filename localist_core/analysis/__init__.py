"""The analysis layer: it takes a model and returns numbers. Attention metrics and their
controls, streamed evaluation and the leak test, the threshold theory, user rules, and the
inspection of one text that the dashboard shows. It imports from the model layer only."""
