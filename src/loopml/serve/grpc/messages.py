"""The generated protobuf and gRPC modules, loaded into a private descriptor pool.

Every OIP implementation registers the same names (``inference.ModelInferRequest``, ...) in
protobuf's process-wide default pool, and a second registration of a name from another
``.proto`` file is a hard error ("duplicate symbol"). Triton's ``tritonclient.grpc`` does,
so a process that imports both (a test, a client-side tool, a notebook beside a server) would
fail on whichever came second. The generated ``_pb2`` module asks for the default pool once,
at import; handing it a private pool for that one import keeps loopml's messages out of the
way, and the wire format is unchanged (it depends on field numbers, not on pools).
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

_PB2 = "loopml.serve.grpc.grpc_predict_v2_pb2"
_PB2_GRPC = "loopml.serve.grpc.grpc_predict_v2_pb2_grpc"
_lock = threading.Lock()


def load() -> tuple[ModuleType, ModuleType]:
    """``(grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc)``; the first call imports them."""
    with _lock:
        if _PB2 not in sys.modules:
            from google.protobuf import descriptor_pool

            private = descriptor_pool.DescriptorPool()
            default = descriptor_pool.Default
            descriptor_pool.Default = lambda: private  # read once, by the generated module's import
            try:
                importlib.import_module(_PB2)
            finally:
                descriptor_pool.Default = default
        return sys.modules[_PB2], importlib.import_module(_PB2_GRPC)
