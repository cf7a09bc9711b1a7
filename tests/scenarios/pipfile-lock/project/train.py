"""Parses a config into an attrs class."""

import json

import attrs
import yaml


@attrs.define
class Config:
    scale: float
    weights: list


config = Config(**yaml.safe_load(open("config.yaml")))
json.dump({"total": sum(config.weights) * config.scale}, open("metrics.json", "w"))
