"""The records reprobox keeps, their one codec, and the grammars their values must satisfy.

- :mod:`.codec`: records (frozen dataclasses) to and from JSON, schema tags, canonical forms.
- :mod:`.environment` and :mod:`.experiment`: the records of ``environment.json`` and
  ``experiment.json``.
- :mod:`.grammar`: the strict grammar of every value that reaches a Dockerfile, a shell, a path
  or pip; :mod:`.envvars` the environment variables a record may replay; :mod:`.patch` the paths
  a recorded patch touches.
- :mod:`.check`: a whole record walked through those grammars (what the store does once, when it
  reads an experiment).
"""

from .codec import (
    SCHEMA_VERSION,
    Json,
    Record,
    canonical_json,
    check_schema,
    json_too_deep,
    pretty_json,
    sha256_hex,
)
from .environment import (
    ENVIRONMENT_SCHEMA,
    GPU,
    AptSource,
    CondaEnvironment,
    CondaPackage,
    Environment,
    Hardware,
    InstalledChange,
    Interpreter,
    OSInfo,
    Package,
    PackageSource,
    SystemPackage,
)
from .experiment import (
    EXPERIMENT_FILE,
    EXPERIMENT_SCHEMA,
    EXPERIMENT_VERSION,
    ID_LENGTH,
    INLINE_METRICS,
    RUN_SCHEMA,
    DvcInfo,
    DvcOutput,
    Experiment,
    GitInfo,
    LoadedLibrary,
    OutputFile,
    RunUsage,
    file_digest,
    flatten_metrics,
    seal_id,
)

__all__ = [
    "ENVIRONMENT_SCHEMA",
    "EXPERIMENT_FILE",
    "EXPERIMENT_SCHEMA",
    "EXPERIMENT_VERSION",
    "GPU",
    "ID_LENGTH",
    "INLINE_METRICS",
    "RUN_SCHEMA",
    "SCHEMA_VERSION",
    "AptSource",
    "CondaEnvironment",
    "CondaPackage",
    "DvcInfo",
    "DvcOutput",
    "Environment",
    "Experiment",
    "GitInfo",
    "Hardware",
    "InstalledChange",
    "Interpreter",
    "Json",
    "LoadedLibrary",
    "OSInfo",
    "OutputFile",
    "Package",
    "PackageSource",
    "Record",
    "RunUsage",
    "SystemPackage",
    "canonical_json",
    "check_schema",
    "file_digest",
    "flatten_metrics",
    "json_too_deep",
    "pretty_json",
    "seal_id",
    "sha256_hex",
]
