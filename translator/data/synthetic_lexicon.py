"""The small world of the synthetic DoD: categories, words, sentence templates and instruction templates.

Every word has exactly one category along each of three dimensions: a kind ("bird"), a colour ("red")
and a place ("kitchen"), so it belongs to 3 categories and the same word gets a different label in
classification tasks whose classes contain a different one of them. 12 kinds x 18 words = 216 words;
11 colours and 10 places: 33 categories. No word is also a category name, an instruction word, or the
reserved label `NONE_LABEL`.
"""

from __future__ import annotations

import dataclasses

DIMENSIONS = ("kind", "color", "place")
NONE_LABEL = "none"  # the answer of a classification task when the input's word is in none of its classes


@dataclasses.dataclass(frozen=True)
class Category:
  """A class of words, with the phrases that describe its members.

  name: the one-word class label ("bird", "red", "kitchen").
  dimension: one of DIMENSIONS.
  is_: singular predicate ("is a bird", "is red", "is found in the kitchen").
  are: plural predicate ("are birds", ...); `are_not` negates it.
  plural: noun phrase for its members ("birds", "red things", "things found in the kitchen").
  """

  name: str
  dimension: str
  is_: str
  are: str
  plural: str

  @property
  def are_not(self) -> str:
    return "are not" + self.are[len("are"):]


def _kind(name, article, plural, uncountable=False):
  if uncountable:
    return Category(name, "kind", f"is {name}", f"are {name}", plural)
  return Category(name, "kind", f"is {article} {name}", f"are {plural}", plural)


def _color(name):
  return Category(name, "color", f"is {name}", f"are {name}", f"{name} things")


def _place(name, where):
  return Category(name, "place", f"is found {where}", f"are found {where}", f"things found {where}")


KINDS = (
    _kind("mammal", "a", "mammals"),
    _kind("bird", "a", "birds"),
    _kind("fish", "a", "fish"),
    _kind("insect", "an", "insects"),
    _kind("fruit", "a", "fruits"),
    _kind("vegetable", "a", "vegetables"),
    _kind("tool", "a", "tools"),
    _kind("vehicle", "a", "vehicles"),
    _kind("furniture", "", "pieces of furniture", uncountable=True),
    _kind("clothing", "", "pieces of clothing", uncountable=True),
    _kind("instrument", "an", "instruments"),
    _kind("flower", "a", "flowers"),
)
COLORS = tuple(_color(c) for c in (
    "red", "green", "blue", "yellow", "white", "black", "brown", "pink", "gray", "orange", "purple"))
PLACES = (
    _place("farm", "on the farm"),
    _place("sea", "in the sea"),
    _place("river", "in the river"),
    _place("forest", "in the forest"),
    _place("garden", "in the garden"),
    _place("kitchen", "in the kitchen"),
    _place("city", "in the city"),
    _place("school", "at school"),
    _place("garage", "in the garage"),
    _place("bedroom", "in the bedroom"),
)
CATEGORIES = {c.name: c for c in KINDS + COLORS + PLACES}

# kind: "word color place", ...
_WORDS = {
    "mammal": """cow black farm, horse brown farm, pig pink farm, sheep white farm, goat gray farm,
        bear brown forest, fox orange forest, wolf gray forest, deer brown forest, rabbit white garden,
        mouse gray kitchen, cat black bedroom, dog yellow city, whale blue sea, dolphin gray sea,
        seal black sea, otter brown river, squirrel red forest""",
    "bird": """chicken white farm, duck green river, goose gray river, turkey brown farm, owl brown forest,
        eagle black forest, crow black city, pigeon gray city, parrot green forest, robin red garden,
        sparrow brown garden, swan white river, penguin black sea, gull white sea, flamingo pink river,
        canary yellow bedroom, peacock blue garden, woodpecker red forest""",
    "fish": """salmon pink river, trout brown river, tuna gray sea, shark gray sea, cod white sea,
        goldfish orange bedroom, carp brown river, pike green river, eel black river, sardine blue kitchen,
        mackerel blue sea, catfish brown river, swordfish purple sea, clownfish orange sea, perch green river,
        snapper red sea, anchovy gray kitchen, minnow yellow river""",
    "insect": """bee yellow garden, ant black garden, butterfly blue garden, ladybug red garden,
        mosquito gray river, fly black kitchen, beetle green forest, cricket brown farm,
        grasshopper green farm, moth white bedroom, wasp yellow city, dragonfly blue river,
        termite white forest, flea black farm, cockroach brown kitchen, firefly yellow forest,
        caterpillar green garden, cicada purple forest""",
    "fruit": """apple red kitchen, banana yellow kitchen, lemon yellow kitchen, cherry red garden,
        grape purple farm, plum purple garden, peach orange farm, pear green garden, mango orange kitchen,
        melon green farm, strawberry red garden, blueberry blue forest, coconut brown sea, lime green kitchen,
        kiwi brown kitchen, apricot orange farm, fig purple garden, raspberry pink forest""",
    "vegetable": """carrot orange garden, potato brown farm, tomato red garden, onion white kitchen,
        garlic white kitchen, cabbage green farm, lettuce green garden, pea green garden, bean green farm,
        corn yellow farm, pumpkin orange farm, beet purple garden, radish red garden, spinach green kitchen,
        celery green kitchen, eggplant purple garden, cucumber green garden, pepper red kitchen""",
    "tool": """hammer black garage, saw gray garage, wrench gray garage, drill yellow garage,
        shovel brown garden, rake green garden, knife gray kitchen, spoon white kitchen, fork gray kitchen,
        ladder brown garage, scissors blue school, ruler yellow school, pencil yellow school, axe red forest,
        broom brown kitchen, needle white bedroom, screwdriver red garage, hoe brown farm""",
    "vehicle": """car red city, bus yellow school, truck blue city, tractor green farm, bicycle blue city,
        motorcycle black garage, train gray city, boat white river, ship gray sea, taxi yellow city,
        ambulance white city, van white garage, canoe red river, yacht white sea, submarine yellow sea,
        scooter pink city, wagon brown farm, jeep green forest""",
    "furniture": """chair brown kitchen, table brown kitchen, bed white bedroom, sofa gray bedroom,
        desk brown school, shelf white garage, wardrobe brown bedroom, dresser white bedroom,
        bench green garden, stool black kitchen, cabinet white kitchen, lamp yellow bedroom,
        mirror gray bedroom, bookcase brown school, crib pink bedroom, cupboard blue kitchen,
        hammock blue garden, armchair red bedroom""",
    "clothing": """shirt white school, jacket black city, coat gray city, hat black city, scarf red city,
        sock white bedroom, shoe brown city, boot black farm, glove green garden, dress pink bedroom,
        skirt purple school, sweater orange bedroom, pajamas blue bedroom, uniform blue school,
        apron white kitchen, swimsuit pink sea, raincoat yellow city, slipper pink bedroom""",
    "instrument": """piano black school, guitar brown bedroom, violin brown school, drum red garage,
        flute white school, trumpet yellow city, harp white bedroom, cello brown school, saxophone yellow city,
        banjo brown farm, harmonica gray farm, clarinet black school, tuba yellow school, accordion red city,
        tambourine pink school, ukulele orange sea, trombone yellow garage, xylophone purple school""",
    "flower": """rose red garden, tulip pink garden, daisy white garden, lily white river,
        sunflower yellow farm, orchid purple bedroom, lavender purple garden, poppy red farm,
        violet purple forest, daffodil yellow garden, iris blue river, lotus pink river,
        dandelion yellow farm, jasmine white city, bluebell blue forest, marigold orange garden,
        carnation pink city, peony pink garden""",
}


def _parse_words():
  words = {}
  for kind, text in _WORDS.items():
    for entry in text.split(","):
      word, color, place = entry.split()
      words[word] = (kind, color, place)
  return words


WORDS: dict[str, tuple[str, str, str]] = _parse_words()  # word -> (kind, color, place), in table order
WORD_LIST: tuple[str, ...] = tuple(WORDS)
MEMBERS: dict[str, tuple[str, ...]] = {
    c: tuple(w for w, cats in WORDS.items() if c in cats) for c in CATEGORIES}

LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOWELS = "aeiou"

# Inputs of classification tasks: a short sentence or phrase around one word. `{a}` is "a" or "an".
SENTENCE_TEMPLATES = (
    "{w}",
    "the {w}",
    "an old {w}",
    "I noticed {a} {w} today.",
    "Look at the {w}.",
    "My friend likes the {w}.",
    "We talked about the {w}.",
    "There is {a} {w} here.",
    "She drew {a} {w}.",
    "He bought {a} {w} yesterday.",
    "This is my favorite {w}.",
    "Have you seen the {w}?",
    "The {w} was in the picture.",
    "I think about the {w} a lot.",
    "They found {a} {w}.",
    "Tell me about the {w}.",
    "It looks like {a} {w}.",
    "Everyone knows the {w}.",
    "Where is the {w}?",
    "A story about {a} {w}.",
)


def fill_sentence(template: str, word: str) -> str:
  return template.format(w=word, a="an" if word[0] in VOWELS else "a")


# Classification instructions; `{classes}` is "k1, k2, k3, k4, k5", `{classes_or}` is "k1, k2, k3, k4 or k5".
# The first is canonical. The reserved answer NONE_LABEL is a convention of the whole DoD, never named.
CLASSIFICATION_TEMPLATES = (
    "Classify the following sentence as: {classes}",
    "Label the sentence with one of the following classes: {classes}.",
    "Which of these classes does the sentence belong to: {classes}?",
    "Pick the category of the sentence from: {classes}.",
    "Assign one of these labels to the sentence: {classes}.",
    "Categorize the input as {classes_or}.",
    "Read the sentence and answer with one of: {classes}.",
    "Possible classes: {classes}. Classify the sentence.",
    "Tell whether the sentence is about {classes_or}.",
)
