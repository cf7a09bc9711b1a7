"""The replay protocol between ``reprobox run`` and a script that records itself.

``reprobox run`` sets these variables in the command's environment. A script calling
``reprobox.capture(metrics=...)`` then writes its inline metrics to the file RUN_METRICS_ENV
names, for the run to compare with the recorded ones, instead of capturing again.
"""

#: Where the rerun's inline metrics are reported (a file in the checkout).
RUN_METRICS_ENV = "REPROBOX_RUN_METRICS"
#: The id of the experiment being reproduced.
RUN_EXPERIMENT_ENV = "REPROBOX_EXPERIMENT"
