"""LatentRouter: routing capsules, model capability tokens, latent communication, distributional head and
bounded correction (../shared/papers/latentrouter-paper.txt).

May import: `router.data`, torch.
"""
