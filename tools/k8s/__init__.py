"""Render, validate and check the Kubernetes manifests in k8s/.

    python -m tools.k8s                  # every target: render, validate, check; non-zero on a problem
    python -m tools.k8s dev              # only some targets (dev, prod-gpu, model-download, metrics-adapter)
    python -m tools.k8s --print prod-gpu # the rendered YAML of one target

- `render(target)` runs the pinned kustomize (render.py) and returns the objects.
- `validate(objects)` pipes them to `kubernetes-validate --strict` against the Kubernetes schemas
  of KUBERNETES_VERSION (validate.py): unknown fields (a typo'd `contianerPort`), missing required
  fields and wrong types fail, and so does any kind without a schema (custom resources are not used).
- `check(objects)` does what schemas cannot (checks.py): pods and containers (pods.py), the
  containers that run a service against its config class (config.py, through
  tools/service_configs.py), the objects against each other (cluster.py) and the autoscalers
  (autoscaling.py). Every problem is one line naming the object, the container and the field.

Both return a list of problems (empty: fine).
"""

from .checks import check
from .cli import main
from .objects import GPU, quantity, service_host_port
from .render import TARGETS, K8sToolError, ensure_kustomize, render
from .validate import KUBERNETES_VERSION, validate

__all__ = [
    "GPU",
    "KUBERNETES_VERSION",
    "TARGETS",
    "K8sToolError",
    "check",
    "ensure_kustomize",
    "main",
    "quantity",
    "render",
    "service_host_port",
    "validate",
]
