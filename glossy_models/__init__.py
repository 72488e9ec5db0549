"""glossy_models: layers, likelihoods, priors, VAE / HVAE / PixelHVAE and the factory `registry.build`.

Imports nothing of glossy's other packages."""
