"""An ensemble of LightGBM regressors (bagged, differently seeded): the tree-based predictor of the registry.

Gradient-boosted trees are among the strongest NAS performance predictors at small training sizes (White et al.
2021, "How powerful are performance predictors in NAS?"). Settings are scaled down for the tens of points a search
has: shallow trees, few leaves, tiny minimum leaf size.
"""

from __future__ import annotations

import numpy as np

from nas.predictors.base import PREDICTORS, Predictor


@PREDICTORS.register(
    "lgbm", paper="White et al., NeurIPS 2021 (How powerful are performance predictors in NAS?)",
    kwargs=("members", "n_estimators", "learning_rate", "seed"),
)
class LightGBMEnsemble(Predictor):
    name = "lgbm"

    def __init__(self, members: int = 5, n_estimators: int = 100, learning_rate: float = 0.1, seed: int = 0) -> None:
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members to report a spread, got {members}")
        self.members, self.n_estimators, self.learning_rate, self.seed = members, n_estimators, learning_rate, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> LightGBMEnsemble:
        import lightgbm as lgb

        rng = np.random.default_rng(self.seed)
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.models = []
        for m in range(self.members):
            idx = rng.integers(0, len(x), len(x))
            model = lgb.LGBMRegressor(
                n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=8, max_depth=4,
                min_child_samples=2, min_data_in_bin=1, subsample=1.0, colsample_bytree=0.8, reg_lambda=1.0,
                random_state=self.seed * 1000 + m, n_jobs=1, verbose=-1,
            )
            model.fit(x[idx], y[idx])
            self.models.append(model)
        return self

    def predict_members(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.stack([m.predict(x) for m in self.models])
