"""Diabetes progression: scikit-learn's bundled regression data set, no download needed."""

from __future__ import annotations

import numpy as np
import torch

from dlkit.data.tensor import TensorDataModule, check_split_fractions

__all__ = ["DiabetesDataModule"]


class DiabetesDataModule(TensorDataModule):
    """442 patients, 10 baseline features, target: disease progression one year later.

    Features are standardised with training-split statistics. The target is
    standardised too (``standardize_target``) so a network's output layer starts at
    the right scale; ``target_mean``/``target_std`` convert predictions back to the
    original units (R² does not depend on the choice).

    Args:
        batch_size: Samples per batch. Defaults to 32.
        val_fraction: Share of the data for validation. Defaults to 0.15.
        test_fraction: Share of the data for testing. Defaults to 0.15.
        standardize_target: Standardise the target with training statistics.
            Defaults to True.
        seed: Seed of the split and the shuffling order. Defaults to 42.

    Shapes:
        x: ``(B, 10)`` float32; y: ``(B, 1)`` float32.

    Example:
        >>> dm = DiabetesDataModule(); dm.setup("fit")
        >>> dm.splits["train"][0].shape
        torch.Size([310, 10])
    """

    in_features = 10
    num_outputs = 1

    def __init__(
        self,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        standardize_target: bool = True,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        check_split_fractions(val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.standardize_target = standardize_target
        self.target_mean, self.target_std = 0.0, 1.0

    def model_hints(self) -> dict[str, int]:
        """Model settings this data implies; ``null`` model keys are filled from them."""
        return {"in_features": 10, "num_classes": 1}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_diabetes

        features, target = load_diabetes(return_X_y=True, scaled=False)
        order = np.random.default_rng(self.seed).permutation(len(target))
        n_test = round(self.test_fraction * len(order))
        n_val = round(self.val_fraction * len(order))
        parts = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
        x = torch.from_numpy(features.astype(np.float32))
        y = torch.from_numpy(target.astype(np.float32)).unsqueeze(1)  # (N, 1)
        train = torch.from_numpy(np.sort(parts["train"]))
        x = (x - x[train].mean(0)) / x[train].std(0)
        if self.standardize_target:
            self.target_mean, self.target_std = y[train].mean().item(), y[train].std().item()
            y = (y - self.target_mean) / self.target_std
        for name, idx in parts.items():
            if len(idx):
                t = torch.from_numpy(np.sort(idx))
                self.splits[name] = (x[t].contiguous(), y[t])
