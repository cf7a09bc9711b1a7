"""Logs a run like MLflow's file store: params, metrics and the git commit as a tag."""

import json
import os
import time
import uuid

import git

repo = git.Repo(search_parent_directories=True)
commit = repo.head.commit.hexsha
run = os.path.join("mlruns", "0", uuid.uuid4().hex)
os.makedirs(os.path.join(run, "tags"))
os.makedirs(os.path.join(run, "metrics"))
with open(os.path.join(run, "tags", "mlflow.source.git.commit"), "w") as f:
    f.write(commit)
loss = sum(1 / (k * k) for k in range(1, 200))
with open(os.path.join(run, "metrics", "loss"), "w") as f:
    f.write(f"{int(time.time() * 1000)} {loss} 0\n")
json.dump({"loss": loss, "git_commit_tagged": int(len(commit) == 40)}, open("metrics.json", "w"))
