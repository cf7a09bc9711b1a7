"""Make the raw data set (data/raw.csv) the pipeline starts from.

It stands for data that exists only in DVC storage: the example runs it once, `dvc add`s the
file and `dvc push`es it to the DVC remote; a fresh clone gets it back with `dvc pull` only.
"""

import os

import numpy as np
import yaml

params = yaml.safe_load(open("params.yaml"))["generate"]
rng = np.random.default_rng(params["seed"])
n, d = params["n_samples"], params["n_features"]
X = rng.normal(size=(n, d))
weights = rng.normal(size=d)
logits = X @ weights + 0.5 * rng.normal(size=n)
y = (logits > 0).astype(int)
os.makedirs("data", exist_ok=True)
header = ",".join([f"x{i}" for i in range(d)] + ["label"])
np.savetxt("data/raw.csv", np.column_stack([X, y]), delimiter=",", header=header, comments="",
           fmt=["%.8f"] * d + ["%d"])
print(f"wrote data/raw.csv: {n} rows, {d} features")
