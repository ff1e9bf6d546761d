"""Planning tokens: Strategic Gram sets, token-id tries, on-device masks and counts.

  grams = load_strategic_grams("paper")            # list[str], Listing 1 of the paper
  trie = SGTrie.build(grams, tokenizer)            # pytree of arrays; trie.save / SGTrie.load
  mask = planning_mask(token_ids, trie, completion_mask)     # bool[N, T], jittable
  counts = sg_occurrences(token_ids, trie, completion_mask)  # i32[N, Z]
  report = audit(trie, tokenizer, texts)           # device vs character-level reference

Matching semantics: see `grams.py` (and DESIGN.md). The SG extraction pipeline
lives in `hicra_jax.planning.extract`.
"""

from hicra_jax.planning.audit import AuditReport, SGStats, audit
from hicra_jax.planning.extract import (Extraction, extract_strategic_grams, load_solutions,
                                        write_extraction)
from hicra_jax.planning.grams import (gram_key, load_strategic_grams, normalize_grams,
                                      spelling_variants)
from hicra_jax.planning.masks import (planning_mask, planning_mask_and_counts, sg_match_table,
                                      sg_occurrences)
from hicra_jax.planning.reference import ReferenceResult, reference_occurrences, reference_planning
from hicra_jax.planning.tokens import decode_utf8, token_bytes_table
from hicra_jax.planning.trie import SGTrie

__all__ = ["AuditReport", "Extraction", "ReferenceResult", "SGStats", "SGTrie", "audit",
           "decode_utf8", "extract_strategic_grams", "load_solutions", "write_extraction",
           "gram_key", "load_strategic_grams", "normalize_grams",
           "planning_mask", "planning_mask_and_counts", "reference_occurrences",
           "reference_planning", "sg_match_table", "sg_occurrences", "spelling_variants",
           "token_bytes_table"]
