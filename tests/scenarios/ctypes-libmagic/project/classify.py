"""Classifies a few byte strings with libmagic through python-magic."""
import json

import magic

samples = {"pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "png": b"\x89PNG\r\n\x1a\n" + b"\0" * 16,
           "gzip": b"\x1f\x8b\x08\x00" + b"\0" * 16}
expected = {"pdf": "application/pdf", "png": "image/png", "gzip": "application/gzip"}
hits = sum(magic.from_buffer(data, mime=True) == expected[name] for name, data in samples.items())
json.dump({"recognised": hits}, open("metrics.json", "w"))
