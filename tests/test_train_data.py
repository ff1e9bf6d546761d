"""Training data: JSONL / parquet / reasoning-gym rows, prompts, the grain example stream."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hicra_jax.data.datasets import ExampleStream, attach_prompt_ids, load_rows

ROWS = [{"problem": f"What is {i} + 1?", "answer": str(i + 1), "extra": i} for i in range(6)]


def test_jsonl_and_parquet_give_the_same_rows(tmp_path):
  jsonl = tmp_path / "d.jsonl"
  jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
  parquet = tmp_path / "d.parquet"
  pq.write_table(pa.Table.from_pylist(ROWS), parquet)
  a = load_rows("jsonl", path=str(jsonl), question_field="problem")
  b = load_rows("parquet", path=str(parquet), question_field="problem")
  assert a == b == [{"question": r["problem"], "answer": r["answer"]} for r in ROWS]
  with pytest.raises(ValueError, match="'question'"):
    load_rows("parquet", path=str(parquet))  # wrong field name: the message names it


def test_reasoning_gym_rows_keep_metadata_for_the_verifier():
  rows = load_rows("reasoning_gym", task="chain_sum", size=3, seed=1,
                   task_kwargs={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
  assert len(rows) == 3
  assert rows[0]["metadata"]["source_dataset"] == "chain_sum"
  again = load_rows("reasoning_gym", task="chain_sum", size=3, seed=1,
                    task_kwargs={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
  assert rows == again


def test_prompts_use_the_chat_template_and_the_boxed_instruction(smollm2_tokenizer):
  rows = attach_prompt_ids([{"question": "What is 2 + 2?", "answer": "4"}], smollm2_tokenizer)
  text = smollm2_tokenizer.decode(rows[0]["prompt_ids"])
  assert rows[0]["id"] == 0
  assert "<|im_start|>user" in text and "What is 2 + 2?" in text and "\\boxed{}" in text
  assert text.rstrip().endswith("<|im_start|>assistant")


def test_example_stream_is_seeded_and_resumable():
  examples = [{"id": i} for i in range(10)]
  a = ExampleStream(examples, seed=3)
  first = [e["id"] for e in a.take(4)]
  state = a.get_state()
  rest = [e["id"] for e in a.take(12)]
  b = ExampleStream(examples, seed=3)
  assert [e["id"] for e in b.take(4)] == first
  c = ExampleStream(examples, seed=3)
  c.set_state(json.loads(json.dumps(state)))
  assert [e["id"] for e in c.take(12)] == rest
  assert sorted(first + rest[:6]) == list(range(10))  # one epoch visits every example once
  assert [e["id"] for e in ExampleStream(examples, seed=4).take(10)] != first + rest[:6]
  with pytest.raises(ValueError, match="at least one example"):
    ExampleStream([], seed=0)
