"""dlkit's Hydra configs (a package so Hydra can find them when dlkit is installed)."""
