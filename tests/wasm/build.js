// Builds the AssemblyScript proxy-wasm filters tests/wasm runs, with the pinned SDK and
// compiler and the flags the SDK's README gives (`--use abort=abort_proc_exit`, optimized):
// its published "Hello, World" filter (root id "add_header"), taken as published from the
// installed package's README, and our own filters on the SDK (assembly/*.ts).
// Output: build/*.wasm.
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

function compile(name, entry) {
  const out = path.join(here, "build", `${name}.wasm`);
  execFileSync(
    process.execPath,
    [asc, entry, "-b", out, "--use", "abort=abort_proc_exit", "--optimize"],
    { cwd: here, stdio: ["ignore", "inherit", "pipe"] },
  );
  console.log(`built ${path.relative(here, out)}`);
}

function build(name, source) {
  const dir = path.join(here, "build", name, "assembly");
  fs.mkdirSync(dir, { recursive: true });
  const entry = path.join(dir, "index.ts");
  fs.writeFileSync(entry, source);
  compile(name, entry);
}

build("add_header", example(fs.readFileSync(path.join(sdk, "README.md"), "utf8")));
for (const file of fs.readdirSync(path.join(here, "assembly")).filter((f) => f.endsWith(".ts"))) {
  compile(path.basename(file, ".ts"), path.join(here, "assembly", file));
}
