"""tuner-service's own gRPC status API (proto/status.proto), served by the chief on its status port.

``servicer`` maps the chief's ledger to protocol messages, ``server`` builds the gRPC server,
``client`` talks to it, ``cli`` renders it for ``tuner-service status``. Generated code is kept
apart in ``_generated/`` (``make proto``).
"""
