"""Stage 1: split data/raw.csv into data/prepared/{train,test}.csv (seeded shuffle)."""

import os

import numpy as np
import yaml

params = yaml.safe_load(open("params.yaml"))["prepare"]
with open("data/raw.csv") as fh:
    header = fh.readline().strip()
data = np.loadtxt("data/raw.csv", delimiter=",", skiprows=1)
rng = np.random.default_rng(params["seed"])
order = rng.permutation(len(data))
n_test = int(round(len(data) * params["test_fraction"]))
test, train = data[order[:n_test]], data[order[n_test:]]
os.makedirs("data/prepared", exist_ok=True)
fmt = ["%.8f"] * (data.shape[1] - 1) + ["%d"]
for name, part in (("train", train), ("test", test)):
    np.savetxt(f"data/prepared/{name}.csv", part, delimiter=",", header=header, comments="",
               fmt=fmt)
print(f"prepared {len(train)} training and {len(test)} test rows")
