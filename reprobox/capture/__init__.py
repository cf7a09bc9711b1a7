"""capture: fingerprint the environment a run really used: the interpreter and its packages
(probed inside that interpreter), the OS packages owning their native libraries, the OS, the
hardware, conda prefixes and the replayable environment variables.

    target python -> probe (in that interpreter) -> packages + native libs -> OS packages
    -> hardware -> Environment

Nothing here reads the user's code, data or results (:mod:`reprobox.workspace`), locks or
builds: :mod:`reprobox.pipeline` composes the stages into a stored experiment.
"""
