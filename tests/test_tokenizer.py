"""Tokenizer loading, prompt rendering and stop tokens on real tokenizers (offline)."""

from __future__ import annotations

import functools
import json
import os
import struct

import pytest
import tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hicra_jax.data import prompts as P
from hicra_jax import assets
from hicra_jax.models.tokenizer import load_tokenizer

TEXTS = (
    "hello world",
    "  Leading spaces, 12345 numbers and 3.14159",
    "Ünïcödé — 日本語, emoji 🤔\n\n\ttabs",
    "Let's think step by step. So the answer is \\boxed{\\frac{1}{2}}.",
    "x" * 40 + "  \n  y",
)
# A minimal Llama-3-style template; Llama 3.2's tokenizer_config.json in the package has none.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content']"
    " + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


# Short names for the session tokenizers of conftest.py (loaded once per test run).
@pytest.fixture
def qwen3(qwen3_tokenizer):
  return qwen3_tokenizer


@pytest.fixture
def llama32(llama32_tokenizer):
  return llama32_tokenizer


@pytest.fixture
def smollm2(smollm2_tokenizer):
  return smollm2_tokenizer


@functools.lru_cache(maxsize=None)
def _raw(directory):
  """The independent reference: `tokenizers` reading the same tokenizer.json."""
  return tokenizers.Tokenizer.from_file(os.path.join(str(directory), "tokenizer.json"))


@pytest.fixture
def llama32_chat(llama32):
  """The shared Llama 3.2 tokenizer with a Llama-3-style chat template, restored afterwards."""
  original = llama32.chat_template
  llama32.chat_template = LLAMA3_TEMPLATE
  try:
    yield llama32
  finally:
    llama32.chat_template = original


# --- load_tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["qwen3", "llama32"])
def test_tokenizer_json_folder_matches_tokenizers_library(name, request):
  tok = request.getfixturevalue(name)
  directory = {"qwen3": assets.qwen3_tokenizer_dir, "llama32": assets.llama32_tokenizer_dir}[name]()
  raw = _raw(directory)
  assert isinstance(tok, PreTrainedTokenizerFast)
  assert len(tok) == raw.get_vocab_size(with_added_tokens=True)
  for text in TEXTS:
    assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(
        text, add_special_tokens=False).ids
    assert tok(text)["input_ids"] == raw.encode(text).ids
    assert tok.decode(raw.encode(text, add_special_tokens=False).ids) == text


def test_qwen3_and_llama32_templates_and_special_tokens(qwen3, llama32):
  config = json.load(open(os.path.join(assets.qwen3_tokenizer_dir(), "tokenizer_config.json")))
  assert qwen3.chat_template == config["chat_template"]
  assert qwen3.eos_token == "<|im_end|>" and qwen3.bos_token is None
  # The packaged Llama 3.2 tokenizer is the base one: no chat template, BOS added on encode.
  assert llama32.chat_template is None
  assert llama32("a")["input_ids"][0] == llama32.convert_tokens_to_ids("<|begin_of_text|>")


def test_tokenizer_json_only_folder(tmp_path):
  (tmp_path / "tokenizer.json").symlink_to(
      os.path.join(assets.qwen3_tokenizer_dir(), "tokenizer.json"))
  tok = load_tokenizer(tmp_path)
  raw = _raw(assets.qwen3_tokenizer_dir())
  for text in TEXTS:
    assert tok(text)["input_ids"] == raw.encode(text).ids
  assert tok.chat_template is None
  # Without a config there is no EOS, but the ChatML/GPT-2 special tokens are still stops.
  stops = P.stop_tokens(tok)
  assert stops.strings == ("<|im_end|>", "<|endoftext|>")
  assert stops.ids == tuple(raw.token_to_id(s) for s in stops.strings)


def test_tokenizer_json_file_path(tmp_path):
  """A path to a tokenizer.json file loads its folder (here a tiny word-level tokenizer)."""
  tiny = tokenizers.Tokenizer(tokenizers.models.WordLevel(
      {"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
  tiny.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tiny.save(str(tmp_path / "tokenizer.json"))
  tok = load_tokenizer(tmp_path / "tokenizer.json")
  assert tok("hello world again")["input_ids"] == [1, 2, 0]
  assert P.stop_tokens(tok) == P.StopTokens(ids=(), strings=())
  assert P.render_prompt(tok, "hello") == f"Question: hello\n{P.DEFAULT_INSTRUCTION}\nAnswer:"


def test_model_directory_roundtrip(tmp_path, qwen3, smollm2):
  qwen_dir, smol_dir = tmp_path / "qwen3", tmp_path / "smollm2"
  qwen3.save_pretrained(qwen_dir)
  smollm2.save_pretrained(smol_dir)
  (qwen_dir / "config.json").write_text(json.dumps(
      {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936}))
  (smol_dir / "config.json").write_text(json.dumps(
      {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152}))
  for original, directory in ((qwen3, qwen_dir), (smollm2, smol_dir)):
    tok = load_tokenizer(directory)
    raw = _raw(str(directory))
    assert tok.chat_template == original.chat_template
    assert P.stop_tokens(tok) == P.stop_tokens(original)
    for text in TEXTS:
      assert tok(text)["input_ids"] == raw.encode(text).ids == original(text)["input_ids"]
    assert P.render_prompt(tok, "2+2?") == P.render_prompt(original, "2+2?")


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_tokenizer(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="no tokenizer files.*tokenizer.json"):
    load_tokenizer(tmp_path)
  (tmp_path / "weights.bin").write_bytes(b"\0")
  with pytest.raises(ValueError, match="neither a .gguf file nor tokenizer.json"):
    load_tokenizer(tmp_path / "weights.bin")


# --- GGUF ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers_gguf_path(smollm2):
  """AutoTokenizer's GGUF path (which also builds a model config) gives the same tokenizer."""
  path = assets.smollm2_gguf_path()
  reference = AutoTokenizer.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), local_files_only=True)
  assert isinstance(smollm2, PreTrainedTokenizerFast)
  assert len(smollm2) == 49152
  for text in TEXTS:
    assert smollm2(text)["input_ids"] == reference(text)["input_ids"]
  assert smollm2.chat_template == reference.chat_template


def _gguf_metadata(path):
  """Minimal independent GGUF (v2/v3) key-value reader: {key: value}, arrays as lists."""
  scalars = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
             11: "<q", 12: "<d"}
  with open(path, "rb") as f:
    data = f.read(16 << 20)  # the metadata of SmolLM2-135M is well under 16 MiB
  pos = 0

  def unpack(fmt):
    nonlocal pos
    (value,) = struct.unpack_from(fmt, data, pos)
    pos += struct.calcsize(fmt)
    return value

  def string():
    nonlocal pos
    n = unpack("<Q")
    pos += n
    return data[pos - n:pos].decode("utf-8")

  def value(kind):
    if kind == 8:
      return string()
    if kind == 9:
      item_kind, count = unpack("<I"), unpack("<Q")
      return [value(item_kind) for _ in range(count)]
    return unpack(scalars[kind])

  assert data[:4] == b"GGUF" and unpack("<4xI") in (2, 3)
  _, kv_count = unpack("<Q"), unpack("<Q")
  out = {}
  for _ in range(kv_count):
    key = string()
    out[key] = value(unpack("<I"))
  return out


def test_smollm2_gguf_matches_bpe_built_from_gguf_metadata(smollm2):
  """Independent reference: a byte-level BPE built directly from the GGUF vocab and merges."""
  meta = _gguf_metadata(assets.smollm2_gguf_path())
  vocab_list = meta["tokenizer.ggml.tokens"]
  control = [t for t, kind in zip(vocab_list, meta["tokenizer.ggml.token_type"]) if kind == 3]
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE(
      {t: i for i, t in enumerate(vocab_list)},
      [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]))
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  bpe.add_special_tokens(control)  # <|endoftext|>, <|im_start|>, <|im_end|>, ... (ids 0-16)
  assert len(smollm2) == len(vocab_list) == 49152
  for text in TEXTS + ("<|im_start|>user\nhi<|im_end|>\n",):
    assert smollm2(text, add_special_tokens=False)["input_ids"] == bpe.encode(text).ids
    assert smollm2(text)["input_ids"] == bpe.encode(text).ids  # add_bos_token is false
  assert smollm2.chat_template == meta["tokenizer.chat_template"]
  assert smollm2.eos_token_id == meta["tokenizer.ggml.eos_token_id"] == 2


def test_smollm2_chat_template_and_stops(smollm2):
  text = P.render_prompt(smollm2, "What is 2+3?", instruction=None)
  assert text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
  assert text.startswith("<|im_start|>system\n")  # the template's default system prompt
  custom = P.render_prompt(smollm2, "Q", system="Be brief.")
  assert custom == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ\n"
                    f"{P.DEFAULT_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
  stops = P.stop_tokens(smollm2)
  assert stops.ids == (2, 0) and stops.strings == ("<|im_end|>", "<|endoftext|>")
  [ids] = P.encode_prompts(smollm2, ["Q"], system="Be brief.")
  assert ids == smollm2(custom, add_special_tokens=False)["input_ids"]
  assert ids.count(smollm2.convert_tokens_to_ids("<|im_start|>")) == 3


# --- render_prompt / encode_prompts ---------------------------------------------------------------


def test_qwen3_chat_rendering_matches_apply_chat_template(qwen3):
  problem = "Find x if 2x = 6."
  text = P.render_prompt(qwen3, problem)
  expected = qwen3.apply_chat_template(
      [{"role": "user", "content": f"{problem}\n{P.DEFAULT_INSTRUCTION}"}], tokenize=False,
      add_generation_prompt=True)
  assert text == expected
  assert text == (f"<|im_start|>user\n{problem}\n{P.DEFAULT_INSTRUCTION}<|im_end|>\n"
                  "<|im_start|>assistant\n")
  no_think = P.render_prompt(qwen3, problem, chat_template_kwargs={"enable_thinking": False})
  assert no_think == text + "<think>\n\n</think>\n\n"
  messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
  assert P.render_prompt(qwen3, messages, instruction=None) == (
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
  assert P.render_prompt(qwen3, messages, instruction="Box it.").endswith(
      "user\nU\nBox it.<|im_end|>\n<|im_start|>assistant\n")
  # The caller's messages are not mutated.
  assert messages[1]["content"] == "U"
  [ids] = P.encode_prompts(qwen3, [problem])
  assert ids == _raw(assets.qwen3_tokenizer_dir()).encode(text, add_special_tokens=False).ids


def test_plain_template_for_base_model(llama32):
  text = P.render_prompt(llama32, "What is 2+3?")
  assert text == f"Question: What is 2+3?\n{P.DEFAULT_INSTRUCTION}\nAnswer:"
  assert P.render_prompt(llama32, "Q", system="You are a tutor.", instruction=None) == (
      "You are a tutor.\n\nQuestion: Q\nAnswer:")
  few_shot = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
              {"role": "user", "content": "2+2?"}]
  assert P.render_prompt(llama32, few_shot, instruction=None) == (
      "Question: 1+1?\n\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:")
  with pytest.raises(ValueError, match="has no chat template"):
    P.render_prompt(llama32, "Q", template="chat")
  # Plain text gets exactly one BOS (Llama 3 adds it), and no EOS.
  bos = llama32.convert_tokens_to_ids("<|begin_of_text|>")
  [ids] = P.encode_prompts(llama32, ["What is 2+3?"])
  raw = _raw(assets.llama32_tokenizer_dir())
  assert ids == raw.encode(text, add_special_tokens=True).ids
  assert ids[0] == bos and ids.count(bos) == 1
  assert ids[-1] != llama32.eos_token_id


def test_plain_template_on_chat_tokenizer_has_no_bos(qwen3):
  text = P.render_prompt(qwen3, "Q", template="plain", instruction=None)
  assert text == "Question: Q\nAnswer:"
  assert P.encode_prompts(qwen3, ["Q"], template="plain", instruction=None) == [
      qwen3(text, add_special_tokens=False)["input_ids"]]


def test_llama3_chat_template_single_bos_and_eot_stop(llama32_chat):
  tok = llama32_chat
  bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
  text = P.render_prompt(tok, "Hi", instruction=None)
  assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n")
  [ids] = P.encode_prompts(tok, ["Hi"], instruction=None)
  assert ids[0] == bos and ids.count(bos) == 1
  assert ids == tok.apply_chat_template(
      [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=True,
      return_dict=True)["input_ids"]


def test_stop_tokens_known_families(qwen3, llama32):
  qwen_stops = P.stop_tokens(qwen3)
  assert qwen_stops.ids[0] == qwen3.convert_tokens_to_ids("<|im_end|>") == 151645
  assert qwen_stops.strings == ("<|im_end|>", "<|endoftext|>")
  llama_stops = P.stop_tokens(llama32)
  eot = llama32.convert_tokens_to_ids("<|eot_id|>")
  assert eot in llama_stops.ids
  assert llama_stops.strings == ("<|end_of_text|>", "<|eot_id|>", "<|eom_id|>")
  assert P.stop_tokens(llama32) == llama_stops  # deterministic
  assert hash(llama_stops) == hash(P.stop_tokens(llama32))


def test_stop_tokens_derived_from_template_not_hardcoded(llama32_chat):
  """A template whose end-of-turn token is in no known list is still found."""
  tok = llama32_chat
  tok.chat_template = LLAMA3_TEMPLATE.replace("<|eot_id|>", "<|reserved_special_token_7|>")
  stops = P.stop_tokens(tok)
  assert stops.strings[:2] == ("<|end_of_text|>", "<|reserved_special_token_7|>")
  assert stops.ids[1] == tok.convert_tokens_to_ids("<|reserved_special_token_7|>")
  assert len(set(stops.ids)) == len(stops.ids)


def test_prompt_input_errors(qwen3):
  with pytest.raises(ValueError, match="template must be one of"):
    P.render_prompt(qwen3, "Q", template="fancy")
  with pytest.raises(ValueError, match="already starts with a system message"):
    P.render_prompt(qwen3, [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}],
                    system="c")
  with pytest.raises(ValueError, match="message 0"):
    P.render_prompt(qwen3, [{"role": "user"}])
  with pytest.raises(ValueError, match="empty"):
    P.render_prompt(qwen3, [])
  with pytest.raises(ValueError, match="end with a user message"):
    P.render_prompt(qwen3, [{"role": "user", "content": "a"},
                            {"role": "assistant", "content": "b"}],
                    template="plain", instruction=None)
  with pytest.raises(TypeError, match="wrap a single"):
    P.encode_prompts(qwen3, "Q")
  with pytest.raises(TypeError, match="wrap a single conversation"):
    P.encode_prompts(qwen3, [{"role": "user", "content": "Q"}])
