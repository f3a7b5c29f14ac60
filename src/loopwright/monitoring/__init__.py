"""Monitoring: reference profiles, drift, performance from late labels, alerts and reports.

The submodules are imported where they are used (``loopwright.monitoring.drift`` pulls in scipy),
so importing this package costs nothing:

- :mod:`~loopwright.monitoring.profiles` -- the training data summarised once per model version;
- :mod:`~loopwright.monitoring.drift` -- per-feature statistics and verdicts against a profile;
- :mod:`~loopwright.monitoring.performance` -- metrics of a window once its labels arrive;
- :mod:`~loopwright.monitoring.alerts` -- rules over the resulting time series, notifications;
- :mod:`~loopwright.monitoring.report` -- the HTML page and terminal summary of a window.
"""
