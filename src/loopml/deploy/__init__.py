"""Deploying loopml on Kubernetes: the values (values.py), the manifests rendered in Python
(manifests.py) and the Helm chart copied and packaged beside them (chart.py)."""
