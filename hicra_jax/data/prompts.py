"""Prompt rendering, prompt encoding and stop tokens shared by the sampler, eval and trainer.

A prompt is either a problem string or a conversation (a sequence of
`{"role": ..., "content": ...}` messages). It is rendered with the tokenizer's
chat template (`add_generation_prompt=True`) or, for base models without one,
with the plain template below.

Plain template (roles map to "Question"/"Answer"; turns are separated by a
blank line; an optional system text comes first)::

  {system}

  Question: {problem}
  {instruction}
  Answer:

The rendered text ends with "Answer:" (no trailing space), so a byte-level BPE
model starts its completion with a space-prefixed token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from hicra_jax import options

if TYPE_CHECKING:  # annotations only: importing transformers takes seconds
  from transformers import PreTrainedTokenizerBase

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = options.TEMPLATES
PLAIN_QUESTION = "Question: "
PLAIN_ANSWER = "Answer:"
PLAIN_TURN_SEPARATOR = "\n\n"
# End-of-turn / end-of-text tokens of common families, used in addition to EOS and the
# token derived from the chat template, and only when the vocabulary has them as special tokens.
KNOWN_STOP_TOKENS = (
    "<|im_end|>",       # ChatML: Qwen, SmolLM2
    "<|eot_id|>",       # Llama 3.x end of turn
    "<|eom_id|>",       # Llama 3.1+ end of message (tool calls)
    "<|endoftext|>",    # Qwen / GPT-2 / SmolLM2 end of text
    "<|end_of_text|>",  # Llama 3.x end of text
    "<end_of_turn>",    # Gemma
)
_PROBE_USER = "HICRA_PROBE_USER"
_PROBE_ASSISTANT = "HICRA_PROBE_ASSISTANT"

Message = Mapping[str, Any]
Prompt = Union[str, Sequence[Message]]


@dataclasses.dataclass(frozen=True)
class StopTokens:
  """Tokens that end a completion. Hashable (usable as a static jit argument).

  Attributes:
    ids: token ids, deduplicated, in a deterministic order: EOS first, then the
      end-of-turn token of the chat template, then known end-of-turn/end-of-text
      tokens present in the vocabulary.
    strings: `strings[i]` is the token text of `ids[i]` (for text-level stopping).
  """

  ids: tuple[int, ...]
  strings: tuple[str, ...]


def render_prompt(tokenizer: PreTrainedTokenizerBase, problem_or_messages: Prompt, *,
                  system: str | None = None, instruction: str | None = DEFAULT_INSTRUCTION,
                  template: str = "auto",
                  chat_template_kwargs: Mapping[str, Any] | None = None) -> str:
  """Renders one prompt as the text the model continues.

  Args:
    tokenizer: a Hugging Face tokenizer (see `hicra_jax.models.load_tokenizer`).
    problem_or_messages: a problem string (becomes one user turn) or a
      conversation: a sequence of mappings with str "role" and "content".
    system: optional system text, prepended as a system turn. Not allowed when
      the conversation already starts with a system message.
    instruction: appended to the last user turn after a newline; defaults to
      `DEFAULT_INSTRUCTION`. None or "" leaves the user text unchanged.
    template: "auto" (chat template when the tokenizer has one, else plain),
      "chat" (error without a chat template) or "plain" (module docstring).
    chat_template_kwargs: extra variables for the chat template, e.g.
      `{"enable_thinking": False}` for Qwen3.

  Returns:
    The rendered prompt, ending with the generation prompt (chat) or "Answer:" (plain).

  Raises:
    ValueError: unknown `template`, "chat" without a chat template, or a malformed conversation.
    TypeError: the prompt is neither a str nor a sequence of messages.
  """
  messages = _to_messages(problem_or_messages, system=system, instruction=instruction)
  if _resolve_template(tokenizer, template) == "chat":
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **dict(chat_template_kwargs or {}))
    if not isinstance(text, str):
      raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text
  return _render_plain(messages)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], *,
                   system: str | None = None, instruction: str | None = DEFAULT_INSTRUCTION,
                   template: str = "auto",
                   chat_template_kwargs: Mapping[str, Any] | None = None) -> list[list[int]]:
  """Renders and tokenizes prompts, with exactly one BOS where the model uses one.

  Chat-rendered text already holds every special token the template wants (e.g.
  Llama 3's `<|begin_of_text|>`), so it is encoded with `add_special_tokens=False`,
  like `apply_chat_template(tokenize=True)`. Plain text gets the BOS token when the
  tokenizer's own encoding adds one (Llama 3 does, Qwen and SmolLM2 do not), and
  never an appended EOS.

  Args:
    tokenizer: a Hugging Face tokenizer.
    prompts: problem strings and/or conversations (see `render_prompt`); a single
      conversation must be wrapped in a list.
    system, instruction, template, chat_template_kwargs: as in `render_prompt`.

  Returns:
    One list of token ids per prompt (unpadded, variable length).

  Raises:
    TypeError: `prompts` is a single prompt (str or conversation) rather than a sequence of them.
    ValueError: as in `render_prompt`.
  """
  if isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence):
    raise TypeError(f"prompts must be a sequence of prompts, got {type(prompts).__name__}; "
                    "wrap a single prompt in a list")
  if prompts and all(isinstance(p, Mapping) for p in prompts):
    raise TypeError("prompts is a sequence of messages; wrap a single conversation in a list")
  mode = _resolve_template(tokenizer, template)
  bos = _bos_to_add(tokenizer) if mode == "plain" else None
  out = []
  for prompt in prompts:
    text = render_prompt(tokenizer, prompt, system=system, instruction=instruction,
                         template=mode, chat_template_kwargs=chat_template_kwargs)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if bos is not None and ids[:1] != [bos]:
      ids.insert(0, bos)
    out.append(ids)
  return out


def stop_tokens(tokenizer: PreTrainedTokenizerBase) -> StopTokens:
  """Stop tokens of a tokenizer: EOS, the chat template's end-of-turn token, known names.

  The end-of-turn token is found by rendering a short user/assistant
  conversation with the chat template and taking the first special token that
  follows the assistant's content (`<|im_end|>` for Qwen/SmolLM2, `<|eot_id|>`
  for Llama 3). `KNOWN_STOP_TOKENS` that the vocabulary holds as special tokens
  are added too (e.g. `<|endoftext|>`, `<|eom_id|>`), so a tokenizer without a
  chat template still stops on its family's end-of-turn tokens.

  Args:
    tokenizer: a Hugging Face tokenizer.

  Returns:
    `StopTokens` with deduplicated ids in a deterministic order.
  """
  special = _special_tokens(tokenizer)
  candidates: list[int] = []
  eos = tokenizer.eos_token_id
  if isinstance(eos, int):
    candidates.append(eos)
  candidates.extend(_template_end_of_turn_ids(tokenizer, set(special.values())))
  candidates.extend(special[name] for name in KNOWN_STOP_TOKENS if name in special)
  ids = tuple(dict.fromkeys(candidates))
  strings = tuple(tokenizer.convert_ids_to_tokens(list(ids)))
  return StopTokens(ids=ids, strings=strings)


def _resolve_template(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
  if template not in TEMPLATES:
    raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
  has_chat = bool(getattr(tokenizer, "chat_template", None))
  if template == "chat" and not has_chat:
    raise ValueError(
        f"template='chat' but tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat "
        "template (a base model?); use template='plain' or 'auto', or set tokenizer.chat_template")
  if template == "auto":
    return "chat" if has_chat else "plain"
  return template


def _to_messages(prompt: Prompt, *, system: str | None,
                 instruction: str | None) -> list[dict[str, Any]]:
  """Validates a prompt and returns a fresh list of messages with system and instruction applied."""
  if isinstance(prompt, str):
    messages = [{"role": "user", "content": prompt}]
  elif isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
    messages = []
    for i, message in enumerate(prompt):
      if (not isinstance(message, Mapping) or not isinstance(message.get("role"), str)
          or not isinstance(message.get("content"), str)):
        raise ValueError(f"message {i} of the conversation must be a mapping with str 'role' and "
                         f"'content', got {message!r}")
      messages.append(dict(message))
    if not messages:
      raise ValueError("the conversation is empty; expected at least one user message")
  else:
    raise TypeError(
        f"a prompt must be a str or a sequence of messages, got {type(prompt).__name__}")
  if system is not None:
    if messages[0]["role"] == "system":
      raise ValueError(
          "system= was given but the conversation already starts with a system message")
    messages.insert(0, {"role": "system", "content": system})
  if instruction:
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
      raise ValueError("cannot append the instruction: the conversation has no user message")
    messages[last_user]["content"] = f"{messages[last_user]['content']}\n{instruction}"
  return messages


def _render_plain(messages: list[dict[str, Any]]) -> str:
  """Renders messages with the plain Question/Answer template (module docstring)."""
  parts = []
  for i, message in enumerate(messages):
    role, content = message["role"], message["content"]
    if role == "system":
      if i != 0:
        raise ValueError(f"plain template: a system message must come first, found one at {i}")
      parts.append(content)
    elif role == "user":
      parts.append(f"{PLAIN_QUESTION}{content}")
    elif role == "assistant":
      parts.append(f"{PLAIN_ANSWER} {content}")
    else:
      raise ValueError(f"plain template: message {i} has role {role!r}; expected 'system', "
                       "'user' or 'assistant'")
  if messages[-1]["role"] != "user":
    raise ValueError(f"plain template: the conversation must end with a user message, got "
                     f"{messages[-1]['role']!r}")
  return PLAIN_TURN_SEPARATOR.join(parts) + "\n" + PLAIN_ANSWER


def _bos_to_add(tokenizer: PreTrainedTokenizerBase) -> int | None:
  """The BOS id when the tokenizer's own encoding prepends it to text, else None."""
  bos = tokenizer.bos_token_id
  if not isinstance(bos, int):
    return None
  with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
  without = tokenizer("a", add_special_tokens=False)["input_ids"]
  return bos if with_special[:1] == [bos] and without[:1] != [bos] else None


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
  """{token text: id} of the special tokens (named ones and added tokens marked special)."""
  out = dict(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids))
  out.update((token.content, i) for i, token in sorted(tokenizer.added_tokens_decoder.items())
             if getattr(token, "special", False))
  return out


def _template_end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, special: set[int]) -> list[int]:
  """The first special token after the assistant's content in a rendered probe conversation."""
  if not getattr(tokenizer, "chat_template", None):
    return []
  probe = [{"role": "user", "content": _PROBE_USER},
           {"role": "assistant", "content": _PROBE_ASSISTANT}]
  try:
    text = tokenizer.apply_chat_template(probe, tokenize=False)
  except Exception:  # pylint: disable=broad-except  # templates may reject any conversation.
    return []
  if not isinstance(text, str) or _PROBE_ASSISTANT not in text:
    return []
  tail = text[text.rindex(_PROBE_ASSISTANT) + len(_PROBE_ASSISTANT):]
  for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
    if token_id in special:
      return [token_id]
  return []
