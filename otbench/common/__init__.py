"""What the methods share, so that no defense imports a baseline nor a baseline a defense: the FC ResNet of
OTAD and its baselines (network, training, presets, regressor), the defense bases built on it, exact K-NN
search, and the one adversarial-training hook (built on the attacks' own ascent loop)."""
