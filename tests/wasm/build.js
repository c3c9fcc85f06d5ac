// Builds the proxy-wasm filters tests/wasm runs that no one here wrote, as published:
// the "Hello, World" filter (root id "add_header") of @solo-io/proxy-runtime's README,
// taken from the installed package, compiled by the pinned assemblyscript with the flags
// that README gives (`--use abort=abort_proc_exit`, optimized). Output: build/*.wasm.
"use strict";
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");

const here = __dirname;
const sdk = path.join(here, "node_modules", "@solo-io", "proxy-runtime");
const asc = path.join(here, "node_modules", "assemblyscript", "bin", "asc");

function example(readme) {
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  if (blocks.length !== 1) {
    throw new Error(`expected one TypeScript example in the SDK's README, found ${blocks.length}`);
  }
  return blocks[0];
}

function build(name, source) {
  const dir = path.join(here, "build", name, "assembly");
  fs.mkdirSync(dir, { recursive: true });
  const entry = path.join(dir, "index.ts");
  fs.writeFileSync(entry, source);
  const out = path.join(here, "build", `${name}.wasm`);
  execFileSync(
    process.execPath,
    [asc, entry, "-b", out, "--use", "abort=abort_proc_exit", "--optimize"],
    { cwd: here, stdio: ["ignore", "inherit", "pipe"] },
  );
  console.log(`built ${path.relative(here, out)}`);
}

build("add_header", example(fs.readFileSync(path.join(sdk, "README.md"), "utf8")));
