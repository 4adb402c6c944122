"""A local scaled-out platform on real engines, bound to 127.0.0.1 (issue #11).

One module per engine (PostgreSQL, SeaweedFS as the S3 server, the MLflow tracking server,
Prometheus, Alertmanager), each a small class whose constructor stores paths and ports and
whose ``start()`` / ``stop()`` do the I/O; :mod:`loopml.platform.stack` starts them in order
and records pids, ports and URLs in ``DIR/platform.json``. This is for trying the scaled-out
configuration on one machine and for the tests; in production loopml is pointed at existing
servers with the same environment variables.
"""
