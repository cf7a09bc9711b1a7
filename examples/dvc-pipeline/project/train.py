"""Stage 2: fit a gradient-boosted classifier, write model.pkl and metrics.json."""

import json
import pickle

import numpy as np
import yaml
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score

params = yaml.safe_load(open("params.yaml"))["train"]
train = np.loadtxt("data/prepared/train.csv", delimiter=",", skiprows=1)
test = np.loadtxt("data/prepared/test.csv", delimiter=",", skiprows=1)
X_train, y_train = train[:, :-1], train[:, -1].astype(int)
X_test, y_test = test[:, :-1], test[:, -1].astype(int)

model = GradientBoostingClassifier(n_estimators=params["n_estimators"],
                                   max_depth=params["max_depth"], random_state=params["seed"])
model.fit(X_train, y_train)
proba = model.predict_proba(X_test)[:, 1]
metrics = {
    "accuracy": float(accuracy_score(y_test, proba > 0.5)),
    "roc_auc": float(roc_auc_score(y_test, proba)),
}
with open("metrics.json", "w") as fh:
    json.dump(metrics, fh, indent=2, sort_keys=True)
    fh.write("\n")
with open("model.pkl", "wb") as fh:
    pickle.dump(model, fh, protocol=4)
print(json.dumps(metrics))
