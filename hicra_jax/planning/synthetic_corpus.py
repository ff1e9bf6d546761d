"""A synthetic corpus with planted strategic phrases, for testing SG extraction.

Each document is a shuffled list of sentences:
  * planted strategic phrases: CONCEPTS holds groups of close paraphrases
    (one concept each); a document uses each concept with probability
    `concept_rate`, picking one of its paraphrases at random;
  * recurring phrases of medium frequency (three nouns, "kettles volcanoes
    violins"), each in exactly `medium_df` documents: they fill the ranks
    around the top-20% boundary;
  * recurring but rare phrases (three other nouns), each in exactly
    `rare_df` documents, so they survive the min_df pruning but their
    clusters' Cluster DF stays far below the top 20%;
  * per-document unique filler: sentences of random pseudo-words that no other
    document shares (their n-grams have document frequency 1).

Sentences end with a period, so no n-gram crosses from one to the next.
`hicra-jax extract-sgs --config.input=synthetic` runs the pipeline on it.
"""

from __future__ import annotations

import dataclasses
import random
import string

# Groups of paraphrases that all-MiniLM-L6-v2 embeds close together (average
# pairwise cosine similarity >= 0.6) and far from the other groups.
CONCEPTS: tuple[tuple[str, ...], ...] = (
    ("let's try a different approach", "let us try another approach",
     "we should try another method"),
    ("recall the formula for", "remember the formula for",
     "using the formula for"),
    ("let's break this down", "let us break it down",
     "we can break this down"),
    ("let me double-check this", "let me verify this",
     "let me check this again"),
    ("wait, that's not right", "wait, that is wrong",
     "no, that's not correct"),
    ("we can conclude that", "we conclude that", "so we can conclude"),
    ("the key insight is", "the key observation is", "the key idea is"),
)

# Concrete nouns; a rare phrase strings three of them together ("kettles
# volcanoes violins"), each noun used once: such phrases embed far apart.
NOUNS: tuple[str, ...] = tuple("""
kettles volcanoes violins glaciers pencils dolphins lanterns cactuses
trumpets blankets tractors peacocks umbrellas canyons helmets oysters
ladders comets saddles jellyfish carpets lighthouses spoons tornadoes
harps meadows anchors beetles curtains deserts drums otters bricks
satellites mittens swamps ribbons camels chimneys coral feathers
sandcastles wagons owls buckets geysers pianos lobsters hammocks icebergs
scarves ravens candles quarries kites walruses bottles orchards sleds
hornets teapots lagoons boots parrots clocks marshes needles bison
mirrors reefs barrels moths cushions tundras flutes badgers shovels
fjords pillows ferrets chandeliers prairies magnets herons baskets
waterfalls buttons llamas forks dunes slippers penguins cannons rainforests
thimbles moose easels caves banjos squids hats pebbles bagpipes crickets
napkins plateaus sails gorillas rakes savannas tambourines snails envelopes
islands wrenches flamingos cauldrons vineyards yachts hedgehogs crayons
volleyballs sparrows furnaces taxis koalas zippers gondolas oases
asteroids bulldozers catapults daffodils elevators fossils giraffes
hurricanes igloos jaguars kayaks lemons microscopes nectarines orangutans
pyramids quilts rhinoceroses skyscrapers telescopes unicycles vultures
windmills xylophones yogurt zebras accordions blizzards chessboards
dragonflies eclipses fireworks gargoyles hamsters jackhammers kangaroos
lollipops mushrooms nebulas ostriches pretzels raccoons scorpions
trombones volcanologists waffles acorns bamboo cinnamon dinosaurs
emeralds flashlights garlic hedges ivy jukeboxes kiwis lilies mangoes
nightingales octopuses pumpkins quartz radishes stingrays tulips
wombats yaks almonds bagels cobwebs doorknobs earmuffs fiddles gravel
hyenas inkwells jellybeans keyboards lettuce marbles nutmeg olives
pelicans raisins seashells toasters vanilla walnuts
""".split())


@dataclasses.dataclass(frozen=True)
class SyntheticCorpus:
  """Documents plus what was planted in them.

  Attributes:
    texts: the documents.
    concepts: the planted paraphrase groups (CONCEPTS).
    medium_phrases: recurring phrases of intermediate frequency.
    rare_phrases: the recurring-but-rare phrases.
    unique_sentences: per document, its unique filler sentences.
  """

  texts: list[str]
  concepts: tuple[tuple[str, ...], ...]
  medium_phrases: list[str]
  rare_phrases: list[str]
  unique_sentences: list[list[str]]


def _pseudo_word(rng: random.Random) -> str:
  return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 8)))


def _sentence(phrase: str) -> str:
  return phrase[:1].upper() + phrase[1:] + "."


def planted_corpus(n_docs: int = 300, *, seed: int = 0,
                   concept_rate: float = 0.4, n_medium: int = 22,
                   medium_df: int = 15, n_rare: int = 50, rare_df: int = 3,
                   filler_sentences: int = 4,
                   filler_words: int = 8) -> SyntheticCorpus:
  """Builds the corpus (deterministic for a seed).

  The defaults give about 80 clusters at the default clustering: the ~10
  clusters of the planted phrases and their sub-n-grams rank first, the
  boundary of the top 20% falls among the medium phrases, and the rare ones
  rank below it.

  Args:
    n_docs: number of documents.
    seed: random seed.
    concept_rate: probability that a document uses a given concept.
    n_medium: number of medium phrases, each in `medium_df` documents.
    medium_df: see n_medium.
    n_rare: number of rare phrases, each in `rare_df` documents.
    rare_df: see n_rare.
    filler_sentences: unique filler sentences per document.
    filler_words: words per filler sentence.

  Returns:
    The corpus.
  """
  if n_medium + n_rare > len(NOUNS) // 3:
    raise ValueError(f"n_medium + n_rare = {n_medium + n_rare}: at most "
                     f"{len(NOUNS) // 3}")
  if max(rare_df, medium_df) > n_docs:
    raise ValueError(f"rare_df = {rare_df} and medium_df = {medium_df} must "
                     f"be <= n_docs = {n_docs}")
  rng = random.Random(seed)
  nouns = list(NOUNS)
  rng.shuffle(nouns)
  triples = [" ".join(nouns[3 * i:3 * i + 3])
             for i in range(n_medium + n_rare)]
  medium, rare = triples[:n_medium], triples[n_medium:]
  sentences: list[list[str]] = [[] for _ in range(n_docs)]
  for phrases, df in ((medium, medium_df), (rare, rare_df)):
    for phrase in phrases:
      for d in rng.sample(range(n_docs), df):
        sentences[d].append(_sentence(phrase))
  uniques = []
  for d in range(n_docs):
    for group in CONCEPTS:
      if rng.random() < concept_rate:
        sentences[d].append(_sentence(rng.choice(group)))
    own = [" ".join(_pseudo_word(rng) for _ in range(filler_words))
           for _ in range(filler_sentences)]
    uniques.append(own)
    sentences[d].extend(_sentence(s) for s in own)
    rng.shuffle(sentences[d])
  texts = [" ".join(s) for s in sentences]
  return SyntheticCorpus(texts, CONCEPTS, medium, rare, uniques)
