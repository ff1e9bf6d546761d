"""SG sets: the paper preset, JSON / text files, normalization and clear errors."""

from __future__ import annotations

import json
import os

import pytest

from hicra_jax.planning import gram_key, load_strategic_grams, normalize_grams, spelling_variants

SHARED_LISTING = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                              "strategic_grams", "paper_listing1.json")


def test_paper_preset_is_listing1_stripped():
  grams = load_strategic_grams("paper")
  assert len(grams) == 249
  with open(SHARED_LISTING, encoding="utf-8") as f:
    raw = json.load(f)["strategic_grams"]
  assert grams == [g.strip() for g in raw]  # same order, surrounding spaces stripped
  assert "wait, no" in grams and " wait, no" not in grams
  assert "consider the case where" in grams
  assert all(g == g.strip() and g for g in grams)


def test_packaged_listing_names_its_source():
  from importlib import resources
  data = json.loads(resources.files("hicra_jax.planning").joinpath(
      "data", "paper_listing1.json").read_text(encoding="utf-8"))
  assert "2509.03646" in data["source"] and "Listing 1" in data["source"]


def test_json_list_object_and_text_files(tmp_path):
  (tmp_path / "list.json").write_text(json.dumps([" but ", "let's"]), encoding="utf-8")
  (tmp_path / "obj.json").write_text(json.dumps(
      {"strategic_grams": ["hmm,", "## step"], "metadata": {"n": 2}}), encoding="utf-8")
  (tmp_path / "sgs.txt").write_text("but wait\n\n  so, yes  \n## step\n", encoding="utf-8")
  assert load_strategic_grams(tmp_path / "list.json") == ["but", "let's"]
  assert load_strategic_grams(str(tmp_path / "obj.json")) == ["hmm,", "## step"]
  assert load_strategic_grams(tmp_path / "sgs.txt") == ["but wait", "so, yes", "## step"]


def test_duplicates_by_matching_key_keep_first_spelling():
  grams = normalize_grams(["Let's", "let's", "let\u2019s", " but", "but ", "But", "hmm,"])
  assert grams == ("Let's", "but", "hmm,")
  assert gram_key("Let\u2019s go") == gram_key("let's go") == "let's go"
  assert gram_key("## Step") == "## step"
  assert gram_key("What am I") == "what am I"  # only the first letter is case-free


def test_spelling_variants():
  assert sorted(spelling_variants("let's")) == sorted(["let's", "Let's", "let\u2019s",
                                                       "Let\u2019s"])
  assert sorted(spelling_variants("## step")) == ["## Step", "## step"]
  assert spelling_variants("...") == ["..."]
  assert len(spelling_variants("it's what's")) == 8


@pytest.mark.parametrize("content, match", [
    ("[]", "empty"),
    ('{"grams": ["a"]}', "without key 'strategic_grams'"),
    ('["ok", 3]', "entry 1 is int"),
    ('["ok", "   "]', "entry 1 is empty"),
    ('"just a string"', "expected a JSON list"),
    ("{not json", "not valid JSON"),
])
def test_bad_json_files(tmp_path, content, match):
  path = tmp_path / "bad.json"
  path.write_text(content, encoding="utf-8")
  with pytest.raises((ValueError, TypeError), match=match) as e:
    load_strategic_grams(path)
  assert "bad.json" in str(e.value)


def test_other_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown strategic-gram preset 'papr'"):
    load_strategic_grams("papr")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_strategic_grams(tmp_path / "missing.json")
  with pytest.raises(ValueError, match="is a directory"):
    load_strategic_grams(tmp_path)
  (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
  with pytest.raises(ValueError, match="empty"):
    load_strategic_grams(tmp_path / "blank.txt")
  with pytest.raises(TypeError, match="single string"):
    normalize_grams("but")
  with pytest.raises(ValueError, match="NUL"):
    normalize_grams(["a\x00b"])
