"""Architecture hyper-parameters that only some models have, with their defaults (torch-free, so that the
configuration can read them without loading the models)."""

# keyword arguments of the constructors that only these models take
ARCHITECTURE_KEYS: dict[str, tuple[str, ...]] = {"pixelhvae": ("channels", "n_layers")}
PIXELCNN_DEFAULTS = {"channels": 64, "n_layers": 8}  # the reference's PixelCNN decoder: 8 layers of 64 channels
# the VampPrior's settings (a standard prior has none and ignores them): 500 pseudo-inputs, initialised around
# 0.05 with sd 0.01 unless the dataset says otherwise
PRIOR_DEFAULTS = {"n_components": 500, "pseudo_init_mean": 0.05, "pseudo_init_std": 0.01}
