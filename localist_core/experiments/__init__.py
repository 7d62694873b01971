"""The experiments layer: the corpus, training, λ-sweeps with their result cache, the curves read
from that cache, and the reproduction report. It imports from the analysis and model layers."""
