// Validates Kubernetes manifests offline against the Kubernetes OpenAPI schemas that the
// kubernetes-models package ships (generated from the upstream API definitions), and
// checks that every document names a kind those schemas know.
//
//   node deploy/check/validate-k8s.mjs deploy/k8s/*.yaml
//
// Exit 0: every document valid. Exit 1: a message per invalid document.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.log(`FAIL ${file}: YAML: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    const { apiVersion, kind } = obj;
    const name = `${kind}/${obj.metadata?.name ?? "?"}`;
    const module = `kubernetes-models/${apiVersion}/${kind}`;
    let Model;
    try {
      Model = (await import(module))[kind];
    } catch (e) {
      console.log(`FAIL ${file}: ${name}: no schema for apiVersion ${apiVersion} kind ${kind}`);
      failed++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`ok ${file}: ${name} (${apiVersion})`);
      checked++;
    } catch (e) {
      console.log(`FAIL ${file}: ${name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${checked} valid, ${failed} invalid`);
process.exit(failed || checked === 0 ? 1 : 0);
