"""Reads a config with PyYAML and writes a metric derived from it."""

import json

import six
import yaml

config = yaml.safe_load(open("config.yaml"))
total = sum(config["weights"]) * config["scale"]
assert six.PY3
json.dump({"total": total}, open("metrics.json", "w"))
