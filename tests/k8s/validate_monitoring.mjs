// Validate Prometheus Operator objects (ServiceMonitor, PodMonitor, PrometheusRule) against the
// CRD schemas compiled into @kubernetes-models/prometheus-operator (installed into .tools/node
// by scripts/install-k8s-tools.sh). kubernetes-validate has no schema for these kinds.
//
//   node tests/k8s/validate_monitoring.mjs <node-dir> <objects.json>
//
// objects.json: a JSON list of objects. Prints one line per object; exits 1 on any error.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [nodeDir, input] = process.argv.slice(2);
const entry = join(nodeDir, "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js");
const models = await import(pathToFileURL(entry).href);
let failed = 0;
for (const obj of JSON.parse(readFileSync(input, "utf8"))) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const Model = obj.apiVersion === "monitoring.coreos.com/v1" ? models[obj.kind] : undefined;
  if (!Model) {
    console.log(`ERROR ${id}: no model for ${obj.apiVersion} ${obj.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`OK ${id}`);
  } catch (err) {
    console.log(`ERROR ${id}: ${err.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
