"""Uses a library installed straight from its git repository."""

import json

import tinyvcs

json.dump({"h10": round(tinyvcs.harmonic(10), 9)}, open("metrics.json", "w"))
