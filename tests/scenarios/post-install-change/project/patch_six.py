"""The post-install step: adds a constant to the installed six.py."""

import six

path = six.__file__
with open(path, "a") as f:
    f.write("\nPATCHED_LEVEL = 7\n")
print("patched", path)
