"""JSONL examples with images: paths, prompt image tokens, pixels, and bad input naming the example.

Images are generated here with PIL. References: transformers' Qwen2-VL image
processor run on the decoded pixels (grid and patches), and the Qwen2.5-VL
processor's rule for prompt tokens (the rendered text with each <|image_pad|>
repeated t*h*w / merge**2 times, then tokenized).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from hicra_jax.data import images as images_lib
from hicra_jax.data.datasets import attach_prompt_ids, load_rows
from hicra_jax.data.prompts import DEFAULT_INSTRUCTION, render_prompt

PAD = 151655  # <|image_pad|> in the Qwen2.5 / Qwen3 vocabulary


def _png(path, height, width, mode="RGB", seed=0):
  rng = np.random.default_rng(seed)
  channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode] if mode in ("RGB", "RGBA", "L") else None
  if channels is None:  # I;16 etc.: 16-bit grey
    array = rng.integers(0, 65535, (height, width), dtype=np.uint16)
    Image.fromarray(array).save(path)
    return path
  shape = (height, width) if channels == 1 else (height, width, channels)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
  return path


@pytest.fixture(scope="module")
def processor():
  # Small pixel bounds: a few dozen patches per image.
  return images_lib.image_processor(min_pixels=56 * 56, max_pixels=28 * 28 * 16)


@pytest.fixture
def dataset(tmp_path):
  """train.jsonl in data/ with relative, absolute and list image paths, a blank line and a
  text-only row."""
  folder = tmp_path / "data"
  (folder / "img").mkdir(parents=True)
  a = _png(folder / "img" / "a.png", 60, 90)
  b = _png(tmp_path / "b.png", 100, 40, mode="L", seed=1)
  c = _png(folder / "c.png", 30, 30, mode="RGBA", seed=2)
  rows = [{"problem": "What is shown?", "answer": "1", "image": "img/a.png"},
          None,  # a blank line
          {"problem": "Two images?", "answer": "2", "images": [str(b), "c.png"]},
          {"problem": "Text only", "answer": "3"}]
  path = folder / "train.jsonl"
  path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in rows))
  return path, [str(a), str(b), str(c)]


def test_jsonl_rows_resolve_images_and_name_their_line(dataset):
  path, (a, b, c) = dataset
  rows = load_rows("jsonl", path=str(path), question_field="problem")
  assert rows[0] == {"question": "What is shown?", "answer": "1", "images": [a],
                     "where": f"{path}:1"}
  assert rows[1]["images"] == [b, c] and rows[1]["where"] == f"{path}:3"
  assert rows[2] == {"question": "Text only", "answer": "3"}  # text rows are unchanged


def test_header_grid_equals_the_processors_grid(tmp_path, processor):
  """The grid read from the header (prompt tokens at load time) is the one the processor
  makes of the pixels: small images scaled up, large ones down, odd sizes rounded."""
  sizes = [(60, 90), (28, 28), (13, 200), (500, 333), (1000, 700), (57, 57)]
  for i, (h, w) in enumerate(sizes):
    path = _png(tmp_path / f"{i}.png", h, w, seed=i)
    reference = processor(images=[Image.open(path)])["image_grid_thw"]
    assert images_lib.image_grid(processor, str(path), "x") == tuple(reference[0]), (h, w)


def test_prompts_carry_the_image_tokens_the_processor_would(dataset, processor, qwen3_tokenizer):
  path, (a, b, c) = dataset
  rows = load_rows("jsonl", path=str(path), question_field="problem")
  examples = attach_prompt_ids(rows, qwen3_tokenizer, processor=processor)
  assert [e["id"] for e in examples] == [0, 1, 2]
  for example, paths in zip(examples, [[a], [b, c], []]):
    if paths:
      out = processor(images=[Image.open(p) for p in paths])
      grid = out["image_grid_thw"]
      assert example["image_grid_thw"] == grid.tolist()
    # transformers' Qwen2.5-VL processor: render, repeat each pad, tokenize.
    text = render_prompt(qwen3_tokenizer, images_lib.IMAGE_PLACEHOLDER * len(paths)
                         + example["question"], instruction=DEFAULT_INSTRUCTION)
    for i in range(len(paths)):
      n = int(grid[i].prod()) // processor.merge_size ** 2
      text = text.replace(images_lib.IMAGE_PAD, "<|placeholder|>" * n, 1)
    text = text.replace("<|placeholder|>", images_lib.IMAGE_PAD)
    expected = qwen3_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert example["prompt_ids"] == expected
    tokens = int(grid.prod(axis=1).sum()) // 4 if paths else 0
    assert example["prompt_ids"].count(PAD) == tokens
  # Text-only rows keep the text path's prompt exactly.
  assert examples[2]["prompt_ids"] == attach_prompt_ids(rows[2:], qwen3_tokenizer)[0]["prompt_ids"]


def test_pixels_are_the_processors_and_checked_against_the_prompt(dataset, processor,
                                                                  qwen3_tokenizer):
  path, (a, b, c) = dataset
  examples = attach_prompt_ids(load_rows("jsonl", path=str(path), question_field="problem"),
                               qwen3_tokenizer, processor=processor)
  inputs = images_lib.example_pixel_inputs(examples[1], processor)
  reference = processor(images=[Image.open(b), Image.open(c)])
  np.testing.assert_array_equal(inputs.pixel_values, reference["pixel_values"])
  np.testing.assert_array_equal(inputs.image_grid_thw, reference["image_grid_thw"])
  assert inputs.pixel_values.shape == (int(reference["image_grid_thw"].prod(axis=1).sum()),
                                       3 * 2 * 14 * 14)
  assert images_lib.example_pixel_inputs(examples[2], processor) is None
  # An image replaced by one of another size after loading: the grid no longer matches.
  _png(c, 200, 100, mode="RGBA")
  with pytest.raises(ValueError, match=r"example 1 \(.*train.jsonl:3\).*image_grid_thw"):
    images_lib.example_pixel_inputs(examples[1], processor)


def test_empty_image_fields_mean_no_images(tmp_path):
  _png(tmp_path / "a.png", 28, 28)
  path = tmp_path / "train.jsonl"
  rows = [{"question": "q", "answer": "1", "image": None, "images": ["a.png"]},
          {"question": "q", "answer": "1", "image": "", "images": []},
          {"question": "q", "answer": "1", "image": None}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  loaded = load_rows("jsonl", path=str(path))
  assert loaded[0]["images"] == [str(tmp_path / "a.png")]
  assert loaded[1] == loaded[2] == {"question": "q", "answer": "1"}


def test_missing_image_names_the_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n"
                  + json.dumps({"question": "q", "answer": "1", "image": "nope.png"}) + "\n")
  with pytest.raises(ValueError, match=r"train.jsonl:2: image 'nope.png' does not exist"):
    load_rows("jsonl", path=str(path))


@pytest.mark.parametrize("row, message", [
    ({"image": "a.png", "images": ["a.png"]}, "both 'image' and 'images'"),
    ({"images": [3]}, "expected an image path or a non-empty list"),
])
def test_malformed_image_fields_name_the_line(tmp_path, row, message):
  _png(tmp_path / "a.png", 28, 28)
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "1", **row}) + "\n")
  with pytest.raises(ValueError, match=f"train.jsonl:1: .*{message}"):
    load_rows("jsonl", path=str(path))


def test_unsupported_mode_and_unreadable_image_name_the_example(tmp_path, processor,
                                                                qwen3_tokenizer):
  _png(tmp_path / "deep.png", 40, 40, mode="I;16")
  (tmp_path / "text.png").write_text("not an image")
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "1", "image": "deep.png"}) + "\n"
                  + json.dumps({"question": "q", "answer": "1", "image": "text.png"}) + "\n")
  rows = load_rows("jsonl", path=str(path))
  with pytest.raises(ValueError, match=r"example 0 \(.*train.jsonl:1\).*mode 'I;16'"):
    attach_prompt_ids(rows[:1], qwen3_tokenizer, processor=processor)
  with pytest.raises(ValueError, match=r"example 0 \(.*train.jsonl:2\).*cannot read image"):
    attach_prompt_ids(rows[1:], qwen3_tokenizer, processor=processor)


def test_image_token_count_mismatch_names_the_example(tmp_path, processor, qwen3_tokenizer):
  _png(tmp_path / "a.png", 28, 28)
  path = tmp_path / "train.jsonl"
  lines = [{"question": "fine", "answer": "1", "image": "a.png"},
           {"question": "spells <|image_pad|> itself", "answer": "1", "image": "a.png"},
           {"question": "text with <|image_pad|>", "answer": "1"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in lines))
  rows = load_rows("jsonl", path=str(path))
  attach_prompt_ids(rows[:1], qwen3_tokenizer, processor=processor)  # fine
  with pytest.raises(ValueError, match=r"example 1 \(.*train.jsonl:2\): the prompt holds 2 "
                     r"<\|image_pad\|> tokens for 1 images"):
    attach_prompt_ids(rows[:2], qwen3_tokenizer, processor=processor)
  with pytest.raises(ValueError, match=r"example 1 \(no images\): the prompt holds 1 "
                     r"<\|image_pad\|> tokens but image_grid_thw \[\] makes 0"):
    attach_prompt_ids([rows[0], rows[2]], qwen3_tokenizer, processor=processor)
  grid = [[1, 4, 6]]
  with pytest.raises(ValueError, match=r"row 7: the prompt holds 5 .* makes 6 \(\[6\] per image"):
    images_lib.check_image_tokens([1] + [PAD] * 5, grid, PAD, 2, "row 7")
  images_lib.check_image_tokens([1] + [PAD] * 6, grid, PAD, 2, "row 7")


def test_images_need_a_processor_and_a_jsonl_source(dataset, tmp_path, qwen3_tokenizer,
                                                    smollm2_tokenizer, processor):
  path, _ = dataset
  rows = load_rows("jsonl", path=str(path), question_field="problem")
  with pytest.raises(ValueError, match=r"train.jsonl:1: the example has images but the model "
                     "has no image processor"):
    attach_prompt_ids(rows, qwen3_tokenizer)
  with pytest.raises(ValueError, match="has no <\\|image_pad\\|> token"):
    attach_prompt_ids(rows, smollm2_tokenizer, processor=processor)
  pq = pytest.importorskip("pyarrow.parquet")
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  parquet = tmp_path / "rows.parquet"
  pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "1", "image": "a.png"}]),
                 parquet)
  with pytest.raises(ValueError, match="row 0 names images; images are read from JSONL"):
    load_rows("parquet", path=str(parquet))


def test_image_processor_reads_a_model_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
    images_lib.image_processor(str(tmp_path))
  images_lib.image_processor(min_pixels=3136, max_pixels=12544).save_pretrained(tmp_path)
  loaded = images_lib.image_processor(str(tmp_path))
  assert images_lib.grid_of_size(loaded, 1000, 1000) == (1, 8, 8)  # 12544 pixels at most
  # A published Qwen2.5-VL preprocessor_config.json spells the bounds min/max_pixels.
  (tmp_path / "preprocessor_config.json").write_text(json.dumps({
      "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
      "merge_size": 2, "image_processor_type": "Qwen2VLImageProcessor"}))
  assert images_lib.grid_of_size(images_lib.image_processor(str(tmp_path)), 1000, 1000) == (
      1, 72, 72)
  assert os.path.isfile(tmp_path / "preprocessor_config.json")


# ------------------------------------------------------- benchmarks with images


def _mathvista(tmp_path, rows):
  folder = tmp_path / "mathvista"
  (folder / "images").mkdir(parents=True, exist_ok=True)
  _png(folder / "images" / "1.png", 56, 84)
  _png(folder / "images" / "2.png", 40, 40, seed=3)
  path = folder / "testmini.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


MATHVISTA_ROWS = [
    {"pid": "1", "question": "What is the angle?", "image": "images/1.png",
     "choices": ["30", "45", "60"], "answer": "45", "question_type": "multi_choice"},
    {"pid": "2", "question": "How many?", "images": ["images/1.png", "images/2.png"],
     "choices": None, "answer": "3"},
    {"pid": "3", "question": "Text only: 1 + 1?", "answer": "2"},
]


def test_mathvista_style_benchmark_loads_with_local_images(tmp_path):
  from hicra_jax.eval import load_benchmark  # pylint: disable=import-outside-toplevel
  path = _mathvista(tmp_path, MATHVISTA_ROWS)
  bench = load_benchmark(f"mathvista={path}")
  first, second, third = bench.examples
  assert [e["id"] for e in bench.examples] == ["1", "2", "3"]  # MathVista's pid
  assert first["images"] == [str(path.parent / "images" / "1.png")]
  assert first["problem"] == "What is the angle?\nChoices:\n(A) 30\n(B) 45\n(C) 60"
  assert first["answer"] == "45" and first["where"] == f"{path}: line 1 (id 1)"
  assert second["images"] == [str(path.parent / "images" / n) for n in ("1.png", "2.png")]
  assert second["problem"] == "How many?"
  assert "images" not in third and third["problem"] == "Text only: 1 + 1?"


def test_benchmark_image_errors_name_the_row(tmp_path):
  from hicra_jax.eval import load_benchmark  # pylint: disable=import-outside-toplevel
  rows = MATHVISTA_ROWS[:1] + [{"pid": "x7", "question": "q", "image": "images/gone.png",
                                "answer": "1"}]
  path = _mathvista(tmp_path, rows)
  with pytest.raises(ValueError, match=r"testmini.jsonl: line 2 \(id x7\): image "
                     r"'images/gone.png' does not exist"):
    load_benchmark(f"mathvista={path}")
  hub_rows = [{"pid": "1", "question": "q", "image": "images/1.png", "answer": "1"}]
  with pytest.raises(ValueError, match="row 0: names images; images are read from JSONL"):
    load_benchmark("mathvista=hf:AI4Math/MathVista@testmini", hub_loader=lambda *a, **k: hub_rows)


def test_evaluate_hands_image_problems_to_the_sampler(tmp_path):
  """The harness passes {"problem", "images", "where"} for problems with images and the text
  for the others; the model sampler refuses images without an image processor."""
  # pylint: disable=import-outside-toplevel
  from hicra_jax.eval import Samples, evaluate, load_benchmark
  from hicra_jax.eval.harness import ModelSampler
  # pylint: enable=import-outside-toplevel
  path = _mathvista(tmp_path, MATHVISTA_ROWS)
  bench = load_benchmark(f"mathvista={path}")
  seen = []

  def sample(problems, n, seed):
    del seed
    seen.extend(problems)
    return Samples(texts=["\\boxed{45}"] * len(problems) * n, lengths=[3] * len(problems) * n,
                   finish_reasons=["stop"] * len(problems) * n)

  report = evaluate([bench], sample, k=1, rows_per_batch=8)
  assert seen[0] == {"problem": bench.examples[0]["problem"],
                     "images": bench.examples[0]["images"],
                     "where": f"example 1 ({path}: line 1 (id 1))"}
  assert seen[1]["images"] == bench.examples[1]["images"] and seen[2] == "Text only: 1 + 1?"
  assert report.results[0].num_correct == 1  # only problem 1's gold is 45
  with pytest.raises(ValueError, match=r"example 1 .*has images but the sampler has no image "
                     "processor"):
    ModelSampler(None, None)(seen, 1, 0)
