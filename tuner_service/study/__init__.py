"""A study's persistent state on the shared storage: its files, the ledger, histories, endpoints.

``files`` names every file of a study directory and holds the one atomic write and read;
``ledger`` is the chief's record of who ran what (``service_state.json``); ``history`` every
per-epoch report (``trial_history.jsonl``); ``endpoints`` where a running chief listens
(``endpoints.json``). Nothing here imports TensorFlow or gRPC, so light callers (the local
runner, ``status``, ``results``) stay fast.
"""
