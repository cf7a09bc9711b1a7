"""Code that runs inside the target interpreter, not in reprobox's own.

Everything here imports the standard library only: the target may be any Python >= 3.8 with
any set of packages, and reprobox is not installed in it.
"""
