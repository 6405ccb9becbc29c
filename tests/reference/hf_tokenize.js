// Hugging Face's tokenizer, the reference moerun's tokenizer is compared
// against, in one of two builds:
//   rust  the tokenizers library itself (Rust, 0.22), compiled for Node in
//         @anush008/tokenizers: what transformers, vLLM and SGLang run;
//   js    its JavaScript port, @lenml/tokenizers (from transformers.js).
// Loads DIR/tokenizer.json (js: and DIR/tokenizer_config.json), reads one
// JSON string per line on stdin and prints the ids of each as one JSON array
// per line (no special tokens added).  With DECODED, it also writes there,
// one JSON string per line, the decode of those ids (special tokens kept, no
// clean-up of spaces: the text the decoder chain makes).
//
//   node hf_tokenize.js rust|js NODE_MODULES_DIR DIR [DECODED] < strings.jsonl
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");

const [build, modules, dir, decodedPath] = process.argv.slice(2);
if (!["rust", "js"].includes(build) || !modules || !dir) {
  console.error("usage: node hf_tokenize.js rust|js NODE_MODULES_DIR DIR [DECODED] < strings.jsonl");
  process.exit(2);
}

// Both builds as: ids of many strings, texts of many id lists.
function rustTokenizer() {
  const { Tokenizer } = require(path.resolve(modules, "@anush008/tokenizers"));
  const tokenizer = Tokenizer.fromFile(path.join(dir, "tokenizer.json"));
  return {
    encode: async (texts) =>
      (await tokenizer.encodeBatch(texts, { addSpecialTokens: false })).map((e) =>
        Array.from(e.getIds())
      ),
    decode: (ids) => tokenizer.decodeBatch(ids, false),
  };
}

function jsTokenizer() {
  const { TokenizerLoader } = require(path.resolve(modules, "@lenml/tokenizers"));
  const readJson = (name) => JSON.parse(fs.readFileSync(path.join(dir, name), "utf8"));
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: readJson("tokenizer.json"),
    tokenizerConfig: readJson("tokenizer_config.json"),
  });
  return {
    encode: async (texts) =>
      texts.map((t) => Array.from(tokenizer.encode(t, { add_special_tokens: false }))),
    decode: async (ids) =>
      ids.map((i) =>
        tokenizer.decode(i, { skip_special_tokens: false, clean_up_tokenization_spaces: false })
      ),
  };
}

const tokenizer = build === "rust" ? rustTokenizer() : jsTokenizer();
const texts = [];
const lines = (values) => values.map((v) => JSON.stringify(v) + "\n").join("");
readline
  .createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on("line", (line) => texts.push(JSON.parse(line)))
  .on("close", async () => {
    const ids = await tokenizer.encode(texts);
    if (decodedPath) fs.writeFileSync(decodedPath, lines(await tokenizer.decode(ids)));
    process.stdout.write(lines(ids));
  });
