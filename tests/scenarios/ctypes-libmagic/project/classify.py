"""Classifies a few byte strings with libmagic through python-magic."""

import json

import magic

samples = {
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    "script": b"#!/bin/sh\necho hi\n",
    "gzip": b"\x1f\x8b\x08\x00" + b"\0" * 16,
}
expected = {"pdf": "application/pdf", "script": "text/x-shellscript", "gzip": "application/gzip"}
hits = sum(magic.from_buffer(data, mime=True) == expected[name] for name, data in samples.items())
json.dump({"recognised": hits}, open("metrics.json", "w"))
