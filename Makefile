# tuner-service developer targets (observability part; the lead merges the other parts' targets).
PYTHON ?= python

.PHONY: proto dashboard monitoring-tools test-monitoring

## Regenerate the status API's Python code from proto/status.proto (grpcio-tools).
proto:
	$(PYTHON) tools/gen_proto.py

## Regenerate k8s/tuner-service/files/dashboard.json from tools/dashboard.py.
dashboard:
	$(PYTHON) tools/dashboard.py

## Install prometheus and promtool (Debian package) for the monitoring tests.
monitoring-tools:
	bash scripts/ci-monitoring.sh

## Monitoring tests: metrics, status API, rules (promtool), and a real Prometheus on a real search.
test-monitoring:
	$(PYTHON) -m pytest -q tests/monitoring
