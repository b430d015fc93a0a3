#!/usr/bin/python3
"""Renders every template in templates/ on every conversation in contexts/ with Python Jinja2, configured the way
transformers configures it for chat templates, and writes the results to expected/ plus manifest.json.

Run with Debian's Python (apt-get install python3-jinja2):  /usr/bin/python3 make_goldens.py
The C# test suite (GoldenTests) reads manifest.json and compares byte for byte; it never runs Python.
"""
import datetime
import json
import os
import shutil

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_NOW = datetime.datetime(2024, 7, 26, 14, 5, 9)  # strftime_now is pinned so goldens do not depend on today


class GenerationTracker(Extension):
    """Stand-in for transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body
    unchanged (transformers only records the span's offsets, which do not change the text)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers overrides Jinja's tojson: no HTML escaping, no ASCII escaping by default, json.dumps spacing.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return FIXED_NOW.strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# Special tokens per model family, as the family's tokenizer_config.json declares them. A token that is null there
# (Qwen's bos_token) is absent from transformers' special_tokens_map, so it is left out here too.
FAMILY_TOKENS = [
    (("Qwen", "teknium", "NousResearch", "moonshotai"), {"eos_token": "<|im_end|>"}),
    (("meta-llama", "fireworks", "meetkai", "deepseek-ai-DeepSeek-R1-Distill-Llama"),
     {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    (("deepseek-ai",), {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}),
    (("google",), {"bos_token": "<bos>", "eos_token": "<eos>"}),
    (("microsoft-phi-4",), {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}),
    (("microsoft",), {"bos_token": "<s>", "eos_token": "<|endoftext|>"}),
    (("CohereForAI",), {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>"}),
    (("ibm-granite",), {"bos_token": "<|end_of_text|>", "eos_token": "<|end_of_text|>"}),
    (("openai",), {"bos_token": "<|startoftext|>", "eos_token": "<|return|>"}),
    (("ByteDance",), {"bos_token": "<seed:bos>", "eos_token": "<seed:eos>"}),
    (("HuggingFaceTB",), {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}),
    (("allenai",), {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}),
]
DEFAULT_TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


def tokens_for(template_name):
    for prefixes, tokens in FAMILY_TOKENS:
        if template_name.startswith(prefixes):
            return tokens
    return DEFAULT_TOKENS


def main():
    env = make_env()
    templates = sorted(f[:-6] for f in os.listdir(os.path.join(HERE, "templates")) if f.endswith(".jinja"))
    contexts = sorted(f[:-5] for f in os.listdir(os.path.join(HERE, "contexts")) if f.endswith(".json"))
    out_dir = os.path.join(HERE, "expected")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    manifest = []
    for name in templates:
        with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8", newline="") as f:
            template = env.from_string(f.read())
        tokens = tokens_for(name)
        for case in contexts:
            with open(os.path.join(HERE, "contexts", case + ".json"), encoding="utf-8") as f:
                context = json.load(f)
            # transformers always passes tools and documents (None when absent) and add_generation_prompt.
            variables = {"tools": None, "documents": None, "add_generation_prompt": False}
            variables.update(tokens)
            variables.update(context)
            entry = {"template": name, "context": case, "tokens": tokens}
            try:
                text = template.render(**variables)
                file_name = f"{name}__{case}.txt"
                with open(os.path.join(out_dir, file_name), "w", encoding="utf-8", newline="") as f:
                    f.write(text)
                entry["expected"] = file_name
            except jinja2.exceptions.TemplateError as error:
                # Only raise_exception raises a bare TemplateError; its message is part of the contract.
                if type(error) is jinja2.exceptions.TemplateError:
                    entry["raise_exception"] = str(error)
                else:
                    entry["error"] = f"{type(error).__name__}: {error}"
            except Exception as error:  # noqa: BLE001 - any other failure must also fail in our interpreter
                entry["error"] = f"{type(error).__name__}: {error}"
            manifest.append(entry)
    with open(os.path.join(HERE, "manifest.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
        f.write("\n")
    rendered = sum(1 for e in manifest if "expected" in e)
    raised = sum(1 for e in manifest if "raise_exception" in e)
    print(f"{len(templates)} templates x {len(contexts)} contexts: {rendered} rendered, {raised} raise_exception, "
          f"{len(manifest) - rendered - raised} other errors (jinja2 {jinja2.__version__})")


if __name__ == "__main__":
    main()
