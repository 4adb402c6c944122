"""Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``), beside REST.

``grpc_predict_v2.proto`` is the Open Inference Protocol's ``open_inference_grpc.proto``
(kserve/open-inference-protocol, commit eeb043e, Apache-2.0), unchanged: package
``inference``, service ``GRPCInferenceService``, so Triton's ``tritonclient.grpc`` and any
other OIP client talk to it as they are. The ``_pb2`` / ``_pb2_grpc`` modules are generated
from it and committed; regenerate them (grpcio-tools pinned to the grpcio floor in
pyproject.toml, so the generated version check accepts every supported grpcio) with::

    pip install grpcio-tools==1.81.1
    cd src && python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \\
        loopml/serve/grpc/grpc_predict_v2.proto

Import the generated modules only through :func:`loopml.serve.grpc.messages.load`.

Modules: :mod:`.messages` (the generated code, in a private descriptor pool),
:mod:`.codec` (protobuf <-> the OIP dicts of :mod:`loopml.serve.protocols.oip_v2`),
:mod:`.servicer` (the six RPCs over :meth:`ServeApp.oip_infer
<loopml.serve.app.ServeApp.oip_infer>`), :mod:`.service` (the grpc.aio server's life).
"""
