"""The chief: serves a keras-tuner oracle over gRPC until the search is over.

``chief.chief`` (the Chief class), ``chief.servicer`` (protocol <-> oracle), ``chief.server``
(the gRPC server factory) and ``chief.ledger`` (who ran what; no TensorFlow import) are
imported directly so that light callers (the local runner) do not load TensorFlow.
"""
