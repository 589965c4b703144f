"""The chief: serves a keras-tuner oracle over gRPC until the search is over.

``chief.run`` assembles the chief process (``run_chief``: what ``tuner-service chief`` runs),
``chief.chief`` (the Chief class: lifecycle, when the search is over), ``chief.servicer``
(protocol <-> oracle), ``chief.leases`` (which worker holds which trial), ``chief.persistence``
(the oracle's files, written off the request path) and ``chief.server`` (the gRPC server
factory). The study's persistent records live in :mod:`tuner_service.study`, the early-stopping
rules in :mod:`tuner_service.stopping`.
"""
