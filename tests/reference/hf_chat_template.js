// Hugging Face's Jinja (the npm package @huggingface/jinja, which
// transformers.js renders chat templates with) on a model's real
// tokenizer_config.json: the reference moerun's chat templates are compared
// against.  Reads one request body per line on stdin ({"messages": [...],
// "chat_template_kwargs": {...}}), renders the chat template with the
// variables apply_chat_template gives it (messages, add_generation_prompt
// true, the special tokens bos_token, eos_token, unk_token... that
// tokenizer_config.json sets, then the kwargs over them) and prints the
// prompt as one JSON string per line, or {"error": "..."}.
//
//   node hf_chat_template.js NODE_MODULES_DIR TOKENIZER_CONFIG_JSON < bodies.jsonl
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");

const [modules, configPath] = process.argv.slice(2);
if (!modules || !configPath) {
  console.error("usage: node hf_chat_template.js NODE_MODULES_DIR TOKENIZER_CONFIG_JSON");
  process.exit(2);
}
const { Template } = require(path.resolve(modules, "@huggingface/jinja"));
const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
let source = config.chat_template;
if (Array.isArray(source)) source = source.find((t) => t.name === "default").template;
const template = new Template(source);

// A special token is its text, or an AddedToken object with it as content.
const special = (t) => (t && typeof t === "object" ? t.content : t);
const base = { add_generation_prompt: true };
for (const key of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"])
  if (typeof special(config[key]) === "string") base[key] = special(config[key]);

const out = [];
readline
  .createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on("line", (line) => {
    const body = JSON.parse(line);
    const vars = { ...base, messages: body.messages, ...(body.chat_template_kwargs || {}) };
    try {
      out.push(JSON.stringify(template.render(vars)));
    } catch (e) {
      out.push(JSON.stringify({ error: String(e.message) }));
    }
  })
  .on("close", () => process.stdout.write(out.length ? out.join("\n") + "\n" : ""));
