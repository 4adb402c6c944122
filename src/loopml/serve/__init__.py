"""Serving: OIP v2 and MLflow scoring over a fast ASGI app with micro-batching,
hot swap and traffic policies.

Nothing heavy is imported here. Entry points:
``loopml.serve.app.build_app(workspace, endpoints, settings)`` (the ASGI app) and
``loopml.serve.server.ServerHandle`` (a server in a background thread).
"""
