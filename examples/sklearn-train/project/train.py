"""Train a random forest on scikit-learn's bundled digits data set; deterministic by design.

Writes metrics.json (accuracy and macro F1 on a held-out split) and model.pkl. Everything random
is seeded and the forest is built on one thread, so a rerun in the same environment gives the
same numbers to the last bit and the same model file byte for byte.
"""

import json
import pickle

from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

SEED = 0

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=SEED,
                                                    stratify=y)
model = RandomForestClassifier(n_estimators=50, max_depth=12, random_state=SEED, n_jobs=1)
model.fit(X_train, y_train)
pred = model.predict(X_test)

metrics = {
    "accuracy": float(accuracy_score(y_test, pred)),
    "f1_macro": float(f1_score(y_test, pred, average="macro")),
    "n_train": int(len(y_train)),
}
with open("metrics.json", "w") as fh:
    json.dump(metrics, fh, indent=2, sort_keys=True)
    fh.write("\n")
with open("model.pkl", "wb") as fh:
    pickle.dump(model, fh, protocol=4)
print(json.dumps(metrics))
