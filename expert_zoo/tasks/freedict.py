"""FreeDict dictionaries from Debian 12 ``dict-freedict-*`` packages (2022; dictd format: an
``.index`` of base64 offsets and a gzip ``.dict.dz``), each read as "word -> its first
translation" over one-word headwords with one entry and one sense: English -> X
(:data:`FREEDICT`, 22 languages, all but Japanese in Latin script; ``eng-dan`` is too small and
``dict-de-en``, the same Ding data as ``eng-deu``, is not used), X -> English
(:data:`FREEDICT_TO_ENGLISH`) and the 35 :data:`FREEDICT_PAIRS` between two of German, French,
Italian, Spanish, Portuguese, Dutch, Swedish and Finnish (from the ``freedict`` and
``freedict-wikdict`` source packages; only a plain word is kept). A language pair is one family
whichever the direction. GPL-2+ mostly; the WikDict ones (version 2022.12.07-2, from Wiktionary)
CC-BY-SA-3.0. :mod:`expert_zoo.tasks.debian` fetches and loads them, with
:data:`FREEDICT_ARCHIVES` and :data:`FREEDICT_SOURCES` in its own tables.
"""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from pathlib import Path

from .base import Example
from .deb_archive import DebArchive, deb_files
from .packaged import Source
from .wordnet import sample_words

FREEDICT_DEBS = {  # language code: (Debian version, sha256)
    "deu": ("2022.04.21-1", "e85da1519a4d5efdbd7a5a169e828b97920f91e899f45d56fd5b2266a05b5906"),
    "fra": ("2022.04.21-1", "b8db6774b640ae8a372bee119b4304d88e6fd471a283d1326d7ec0abcc8b930e"),
    "ita": ("2022.04.21-1", "aef18ac10bd7582f99b819f634edad0dc0060e59a06f3f041a40203c53e9bb22"),
    "nld": ("2022.04.21-1", "82bc479217e728e95d61aedc4dfb8472b4a9db23412e9754b8f24a9a2d50e943"),
    "por": ("2022.04.21-1", "ef942ae345dda5f504b256a9df131993350737f70a1e55c58f49e4ae3196ec3f"),
    "spa": ("2022.04.21-1", "1b6a624048eddad805dcf0473a74e53420fbe391e7f2638090bddf625e9ad2b6"),
    "swh": ("2022.04.21-1", "ad003a94afad9b5b70951d287f7a2d28f8c27b9d9108d999f682eca85d26f0d7"),
    "jpn": ("2022.12.07-2", "3d06a55a8fa16a529b9f95b8d2fe3f7163700cea03aa7ee5b53c40dcdd6c6868"),
    "afr": ("2022.04.21-1", "d8ce4dcca0caaf7c399b1f4535635db2d7ea39cd73be75ae719c75737f69f3e5"),
    "ces": ("2022.04.21-1", "282e38a11aa8317f61a9f449f028357261b06aabdc35934c1fc04a954d4e5add"),
    "cym": ("2022.04.21-1", "bb954743b460b6033233b0d1b15cd51d1cbce913580076d13ddd9127d724d05a"),
    "fin": ("2022.12.07-2", "037351c22b6f803358517d0293bab9619f6bef964e22cab68f63a174b5d22ebe"),
    "gle": ("2022.04.21-1", "e91944fce8a445a4454dce0cf93839d4ed61f1ce362074152fbcd3b67ffdca50"),
    "hrv": ("2022.04.21-1", "f63ebe17becbcae416fd3ac0d8d949f03e1e876bc5ca51aeb9a1c601e7664897"),
    "hun": ("2022.04.21-1", "64eec7b44df8c8f2ce4c787a3070f90c56907b384e72618a9f7bdb9cd988bcb8"),
    "ind": ("2022.12.07-2", "d2929618bdbdfecf7f71bc46e038fe873d3e6a50ec29cecc1f60ef1c4e940070"),
    "lat": ("2022.04.21-1", "659c9f87b5f6198ef575e805c09100add95038045987e25af2a1442346983f5d"),
    "lit": ("2022.04.21-1", "c4f07e6f56e9e8ba2dfdbf746098c0644edec3497ba9d78962c020e7371f95e0"),
    "nor": ("2022.12.07-2", "cf0c56bd607b30ec0481fcc002b062b9f220e6870a0d6abcc2796bebb68b2097"),
    "pol": ("2022.04.21-1", "edfc15cb7d7decb09d4af7e502d7bf9df170523506fd7d5918d02d8f8a03c816"),
    "swe": ("2022.04.21-1", "55feb9aff9abcc0be412dd11d9d46bc25eec4a80900a7701e57e6ad10331140e"),
    "tur": ("2022.04.21-1", "dd18d6682827301cb7131fda95728dd4c5ec3d73da6dab1f98619310608fbd99"),
}
FREEDICT_TO_ENGLISH = {  # language code: (language, Debian version, sha256, licence)
    "afr": (
        "Afrikaans",
        "2022.04.21-1",
        "131565d2ca3f57d08a7a87d69f3a00b9eaa0857a830a9112b9b5f302330c2cdc",
        "GPL-2+",
    ),
    "ces": (
        "Czech",
        "2022.04.21-1",
        "340208da8e13e75da3eb46b40601509cb7fba37570bdcb993b6de4e7927b71a5",
        "GPL-2+",
    ),
    "cym": (
        "Welsh",
        "2022.04.21-1",
        "393bfa60c002fc5c2b85dc73626547c099c3ad03e41bb2d1e33ffe74d4ca8503",
        "GPL-2+",
    ),
    "dan": (
        "Danish",
        "2022.04.21-1",
        "fc4ba61f675213852cdec454899701afed0f4c7b00f8c66696565a68baa04a80",
        "GPL-3+",
    ),
    "deu": (
        "German",
        "2022.04.21-1",
        "52fa2ba6c73ebe84df0e4a7b8612a94a45e6026a157fc75f5ae36c4a1106e3db",
        "GPL-3+",
    ),
    "ell": (
        "Greek",
        "2022.12.07-2",
        "4a6f9adeb8e085b8a807bf62dd67468dbbbb16ea7299ab41cdddb29e7d404242",
        "CC-BY-SA-3.0",
    ),
    "fin": (
        "Finnish",
        "2022.12.07-2",
        "7abc28d885e36b4e9e5d41c0a7f951fac33cca1d996602fa4a87a0c96934c6bf",
        "CC-BY-SA-3.0",
    ),
    "fra": (
        "French",
        "2022.04.21-1",
        "fb853d1f3da00ddddfe60dc3b88b5aaca122eecf3ba5c219131bea479d6274db",
        "GPL-2+",
    ),
    "hrv": (
        "Croatian",
        "2022.04.21-1",
        "06ba074e4aeaee7b4731b346b0d553f0a8ee989c8271ab60cb40016ab92facab",
        "GPL-2+",
    ),
    "hun": (
        "Hungarian",
        "2022.04.21-1",
        "74a7b6d67e69a9e7544b773ccf5cdbc43b3f89ea59083f2867a3903e1c8e1677",
        "GPL-2",
    ),
    "isl": (
        "Icelandic",
        "2022.04.21-1",
        "1d970fed11bc7637212e2a601e865946bb53d19c87db7098221e1106c367a968",
        "GPL-3+",
    ),
    "ita": (
        "Italian",
        "2022.04.21-1",
        "f0d7a5dd47cefd2e7e8e3be19dc78df6607989324bb1ad8bc61b9a657c3a4774",
        "GPL-2+",
    ),
    "kha": (
        "Khasi",
        "2022.04.21-1",
        "f91cfd1bbef413a8418b4e0363dc0ff0dc467623abad7f8645f4c3b8406ed974",
        "GPL-2+",
    ),
    "kur": (
        "Kurdish",
        "2022.04.21-1",
        "3366d7134e3c43c2e30219e92309d544d86eb6db1716779c467e0da1e89009ab",
        "GPL-2+",
    ),
    "lat": (
        "Latin",
        "2022.04.21-1",
        "bcd9561ea0b94ddafb18e84f4fc8bff843462de2ed69ac31e23b3b45238b7a47",
        "GPL-2+",
    ),
    "lit": (
        "Lithuanian",
        "2022.04.21-1",
        "cba2138942878de4a23866020c5aa8cf32c82afad28f69c782f6c0a86c286bd6",
        "GPL-2+",
    ),
    "nld": (
        "Dutch",
        "2022.04.21-1",
        "827dbf561be0ea04a70a049d8604a82aa2c709e7b744fe1096bd2c8008b0527d",
        "GPL-2+",
    ),
    "pol": (
        "Polish",
        "2022.12.07-2",
        "bb89dccd16967ebe5bdd9ca930cdfc17a6f1527ebae207b99183cbfa8692eeaa",
        "CC-BY-SA-3.0",
    ),
    "por": (
        "Portuguese",
        "2022.04.21-1",
        "6c688a9148bde82a6fbd6b2e3a80c1cec3eb4b3ec2d37901c94dc90bfb008950",
        "GPL-2+",
    ),
    "slv": (
        "Slovenian",
        "2022.04.21-1",
        "e57e3db0d63bb577eed862f242b428556ecee8a382a8686981d48ad7061f9200",
        "GPL-3+",
    ),
    "spa": (
        "Spanish",
        "2022.04.21-1",
        "debf5f88fcdaebe824704664cdbb42b6c14f82ab4adda4e91bc388b16200eefc",
        "GPL-2+",
    ),
    "swe": (
        "Swedish",
        "2022.04.21-1",
        "a117f881e43a5d2afbc082e5bb51041b8795180845ce8b5a991766bce4502aab",
        "GPL-2+",
    ),
    "tur": (
        "Turkish",
        "2022.04.21-1",
        "1c9c1392298e38f1e73957343445b907fd07cce24ba65f0ec5f7071d7754f67f",
        "GPL-2+",
    ),
}
"""FreeDict X -> English dictionaries (``dict-freedict-XXX-eng``): a word of X -> its first
English translation, read as the English -> X ones are. A language pair is one family (its
English -> X name, ``freedict_eng_XXX``) whichever the direction, so that the reverse of a
held-out dictionary never trains an expert: ``gle``, ``slk`` and ``swh`` are held out that way
and left out here (``jpn``, ``ara`` and ``epo`` give no one-word one-sense entries; ``srp`` has
357, under the 400 kept). Licence: the first ``License:`` of the package's copyright file."""

FREEDICT_PAIRS = {  # dictionary: (Debian version, sha256)
    "deu-fin": ("2022.12.07-2", "203676472e0c9e98ddfcbdbc9a568d03f17aa9f479878cf3f4dd4ca0bc4c9f78"),
    "deu-fra": ("2022.12.07-2", "daea8e0b231a5c8c2aed6e59939943fb620fedb03b0e70f1f2874281005b981f"),
    "deu-ita": ("2022.04.21-1", "1efa85af04f155797a5499de66d9a748616aed187690ea07f2e1a162359b3f4c"),
    "deu-nld": ("2022.04.21-1", "1141e3a3e79e19282085ca25b8a48714a74708183a017ce0682726711e747001"),
    "deu-por": ("2022.04.21-1", "dbcee56d0ad781b05e4ed0e62ee40aac9e44ade0642e5511d6f00f5e2a15a7fb"),
    "deu-spa": ("2022.12.07-2", "e63665882b310405aa50e1866743dbcaeb4b5ebb5f3cb3139ecafc8d7f694e1a"),
    "deu-swe": ("2022.12.07-2", "009de3adaca5aae064736abff4fc99388aebbf8259a2a6b4a33e1648f29d7e88"),
    "fin-deu": ("2022.12.07-2", "30eba0cd89f24ee83d90b7fa07da91d1ea0027816bb508323b7a6753b3c13d5a"),
    "fin-fra": ("2022.12.07-2", "963d18ce3e9fd8beb1a9d2a7a081236c5092768eaa7d9c50eba0176b71e2acf3"),
    "fin-ita": ("2022.12.07-2", "f26da550a5e419d460a36cb3f1ad9f6b5c09687b0e00ab4f8e550d1ad49efd4b"),
    "fin-por": ("2022.12.07-2", "b768276ef0459545552b733103e3bc70537a7e0c4a52debe1b610dce0b8dfe31"),
    "fra-deu": ("2022.12.07-2", "06bf0fc248aadca920628700883deb06151961dcd990a4cdc1f3a3f16dace8a7"),
    "fra-fin": ("2022.12.07-2", "b5ec25583a2b7236a4f035234d7119f9d707ab6eb6158fcbf22ea7e3b254e1c0"),
    "fra-nld": ("2022.04.21-1", "4b34e6b37c106ab245cd8f95800c57daa2608143595272ff01c35cca6ea75495"),
    "fra-por": ("2022.12.07-2", "2fd3fb111a091780259e99268fb51c3f0cd1f501c2c20a6cba0ccd30372eb7ab"),
    "fra-spa": ("2022.12.07-2", "f9bccab15974febfee7a0993a7794e42f585b6dfd94a1ef16c597e5743b5f2f4"),
    "fra-swe": ("2022.12.07-2", "f0b81b0f7de6f9ebac9e2808daad8a057efa86f408c2733b2f86d10f9d327bf1"),
    "ita-deu": ("2022.04.21-1", "5a97b162978800f3f57266d5560228ab0744284f78b8cc118a6c431e167f5566"),
    "ita-fin": ("2022.12.07-2", "56bc4f03898c7c7c7d34ad8bec7627efed86560bc10a0cbf4bdcb62335d20915"),
    "ita-por": ("2022.12.07-2", "e03b97e661b9ede032d163d4a8b4619bb2192cbca16863bc42e663b08ad1103b"),
    "ita-spa": ("2022.12.07-2", "fc2b1ec9549d301f56bd6f73b488ee58a4f145be164471e12a7704fbe7997e91"),
    "ita-swe": ("2022.12.07-2", "483971c79b8ba8adcc811f09f736a1b19018a854c834ed277ee2b3a688cabb9c"),
    "nld-deu": ("2022.04.21-1", "f311e5b26b32554c716c7150725013fc7d66f16b27279c73746261060d9fb0a1"),
    "nld-fra": ("2022.04.21-1", "b47742eae59af9fe35e5054f711ed2aa9b46faa842cb8351a70285c33c789e89"),
    "nld-ita": ("2022.12.07-2", "a032919951ff04b9bbc7cc223330e90312f2cb3815006597fcb16c1f8f05e538"),
    "nld-por": ("2022.12.07-2", "1e5ded72c0972cd968a4723f9da8d9b2c68bca3f989357a04f1778612c40e5fb"),
    "nld-swe": ("2022.12.07-2", "1baafc0238e44a5f3d5d3ae7cd1bd946ec752edc4d1133b8ecd75fd0a73be918"),
    "por-deu": ("2022.04.21-1", "323cfdb8f29360636dc26933817dcf49df00072bd9411af0268f24c3341789c3"),
    "por-fra": ("2022.12.07-2", "d9c494c521b56f4be7c6c2156397badf21ee9f119fabb80473bd86557c61c809"),
    "spa-deu": ("2022.04.21-1", "a4a9e9f50c1badb549d91b18e8e3b93fd74d9e87151c94908dddf2afde68430e"),
    "swe-deu": ("2022.12.07-2", "91fab32d456fc0ca353568b80493ba727d8797c6f00f3a3c146e6062f56dc61c"),
    "swe-fra": ("2022.12.07-2", "7dec61c0b619fdcea77091f72ff8b0b9b8bbb253c6ab844fedc932f2f0c5d30f"),
    "swe-ita": ("2022.12.07-2", "63bc5a6bda0d1b594ca9064b7c122b7786a3c11210ff6debe697df8f9f8860e8"),
    "swe-nld": ("2022.12.07-2", "d8389afa08cb8c897f2c12006a8dc4e3ea25b9d99c0d3149866719f4672a6fc3"),
    "swe-por": ("2022.12.07-2", "794fe400bd3f608666d8f19ad403ed1fcb0133af2e36b47ecf9c9671d6898488"),
}
"""FreeDict dictionaries between two languages other than English, read as the others are: a
word -> its first translation, if a plain word. The rule that picked them: Debian 12's
``dict-freedict-<x>-<y>`` with x and y both among German, French, Italian, Spanish, Portuguese,
Dutch, Swedish and Finnish (a list of 18 European languages taken in order until about 40
dictionaries; with Polish it would be 45), each with 300+ usable entries (all have 1,300+). A pair
is one family, ``freedict_<a>_<b>`` in alphabetical order, whichever the direction. The pairs
whose family is held out are left out so that the held-out benchmark stays the same: fin-nld,
nld-fin, fin-swe, swe-fin, fra-ita, nld-spa, por-spa, spa-por, swe-spa."""
FREEDICT_PAIR_LICENCES = {"2022.04.21-1": "GPL-2+", "2022.12.07-2": "CC-BY-SA-3.0"}
"""The licence of a pair's stanza in its copyright file, by Debian version (source package):
``freedict`` GPL-2+, ``freedict-wikdict`` (from Wiktionary) CC-BY-SA-3.0."""


# --- dictd format ----------------------------------------------------------------------------
DICTD = "usr/share/dictd/"
DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
"""dictd's base64 digits for an entry's offset and length in the ``.index`` file."""
DIGIT_VALUE = {digit: value for value, digit in enumerate(DICTD_B64)}
NUMBERED_SENSE = re.compile(r"^\s*\d+\.\s")
NOTES = re.compile(r"<[^>]*>|\[[^\]]*\]")
"""Grammar tags (``<fem>``, ``<adj>``) and field labels (``[bot.]``) after a translation."""


def _b64(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 64 + DIGIT_VALUE[digit]
    return value


def _dictd_index(index: str) -> dict[str, list[tuple[int, int]]]:
    """headword -> the (offset, length) of each of its entries in the unzipped ``.dict``."""
    entries: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            entries[parts[0]].append((_b64(parts[1]), _b64(parts[2])))
    return entries


def _first_translation(headword: str, entry: str, numbers_every_sense: bool = False) -> str | None:
    """The first translation of a one-sense entry (``dog /dɔg/\\nchien, clébard``: ``chien``),
    or None: another headword on the entry's first line, numbered senses, a plural (``<pl>``),
    or a first translation longer than one word. In a dictionary that ``numbers_every_sense``
    an entry whose only line is ``1. ...`` has one sense, its number and final full stop
    dropped (eng-tur: ``acerb /ˈasɜːb/\\n1. acı, sert.``: ``acı``)."""
    headline, *body = [line for line in entry.splitlines() if line.strip()]
    if numbers_every_sense and len(body) == 1 and body[0].startswith("1. "):
        body = [body[0].removeprefix("1. ").rstrip().removesuffix(".")]
    if headline.split(" ")[0] != headword or not body or any(map(NUMBERED_SENSE.match, body)):
        return None
    if "<pl>" in body[0]:
        return None
    first = NOTES.sub("", body[0]).split(",")[0].strip()
    if not first or " " in first or len(first) > 30 or re.search(r"[\d{}()/;:=]", first):
        return None
    return first


NUMBERS_EVERY_SENSE = frozenset({"eng-tur"})
"""Dictionaries that number a lone sense too. In the other English ones a lone ``1.`` entry
stays dropped, as before, so they give the examples their experts were trained on; in those
between two other languages (``zögern\\n1. esitare, titubare``) it is one sense."""
RESPELL = {"eng-hun": str.maketrans("ôûÔÛ", "őűŐŰ")}
"""Letters to put back: eng-hun went through Latin-1, which has no ``ő``/``ű``, and writes
``ô``/``û`` (``heringfüstölô``), letters Hungarian does not use."""


ENGLISH_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")
"""An English answer of an X -> English dictionary: letters, inner hyphens and apostrophes."""
PLAIN_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
"""An answer of a dictionary between two other languages: letters of any script, inner hyphens
and apostrophes (``aujourd'hui``), no markup or word part (``Kubik-``, ``ingen…alls``)."""


def _freedict(source: str, target: str):
    """The reader of ``dict-freedict-<source>-<target>``: headword -> first translation, a fixed
    random sample of at most ``MAX_WORDS``. From English every first translation is kept (as
    when the zoo's experts were trained); into any other language only a plain word."""
    name = f"{source}-{target}"
    stem = f"{DICTD}freedict-{name}"
    answer = ENGLISH_WORD if target == "eng" else PLAIN_WORD
    numbered = name in NUMBERS_EVERY_SENSE or "eng" not in (source, target)

    def read(archive: Path) -> list[Example]:
        files = deb_files(archive, [stem + ".index", stem + ".dict.dz"])
        index = _dictd_index(files[stem + ".index"].decode("utf-8"))
        data = gzip.decompress(files[stem + ".dict.dz"])  # dictzip is gzip with an extra field
        respell = RESPELL.get(name, {})
        out = []
        for headword, places in index.items():
            if len(places) == 1 and headword.isalpha() and headword.islower():
                start, size = places[0]
                entry = data[start : start + size].decode("utf-8")
                translation = _first_translation(headword, entry, numbered)
                if translation and source != "eng":
                    translation = translation.replace("\u2010", "-")  # U+2010 HYPHEN
                    if not answer.fullmatch(translation):  # "#Englanti", "rumble!", "Kubik-"
                        continue
                if translation:
                    out.append(Example(headword, translation.translate(respell)))
        return sample_words(out)

    return read


FREEDICT = {
    "deu": ("German", "FreeDict eng-deu (Ding, Frank Richter, Einhard Leichtfuß): GPL-3+"),
    "fra": ("French", "FreeDict eng-fra (FreeDict contributors): GPL-2+"),
    "ita": ("Italian", "FreeDict eng-ita (FreeDict contributors): GPL-2+"),
    "nld": ("Dutch", "FreeDict eng-nld (FreeDict contributors): GPL-2+"),
    "por": ("Portuguese", "FreeDict eng-por (FreeDict contributors): GPL-2+"),
    "spa": ("Spanish", "FreeDict eng-spa (FreeDict contributors): GPL-2+"),
    "swh": ("Swahili", "FreeDict eng-swh (FreeDict contributors): GPL-2+"),
    "jpn": ("Japanese", "FreeDict eng-jpn (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "afr": ("Afrikaans", "FreeDict eng-afr (FreeDict contributors): GPL-2+"),
    "ces": ("Czech", "FreeDict eng-ces (FreeDict contributors): GPL-2+"),
    "cym": ("Welsh", "FreeDict eng-cym (FreeDict contributors): GPL-2+"),
    "fin": ("Finnish", "FreeDict eng-fin (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "gle": ("Irish", "FreeDict eng-gle (FreeDict contributors): GPL-2+"),
    "hrv": ("Croatian", "FreeDict eng-hrv (FreeDict contributors): GPL-2+"),
    "hun": ("Hungarian", "FreeDict eng-hun (Vony Attila, Bui Pol, FreeDict contributors): GPL-2"),
    "ind": ("Indonesian", "FreeDict eng-ind (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "lat": ("Latin", "FreeDict eng-lat (FreeDict contributors): GPL-2+"),
    "lit": ("Lithuanian", "FreeDict eng-lit (FreeDict contributors): GPL-2+"),
    "nor": ("Norwegian", "FreeDict eng-nor (WikDict, from Wiktionary): CC-BY-SA-3.0"),
    "pol": (
        "Polish",
        "FreeDict eng-pol (FreeDict contributors): GFDL-1.2+ (content), GPL-3+ (markup)",
    ),
    "swe": ("Swedish", "FreeDict eng-swe (FreeDict contributors): GPL-2+"),
    "tur": ("Turkish", "FreeDict eng-tur (FreeDict contributors): GPL-2+"),
}
"""Language and licence (the package's ``usr/share/doc/<package>/copyright``, its ``eng-XXX``
stanza). Dictionaries under 400 usable one-word entries are left out (``eng-dan``: 311)."""


def _freedict_pair(pair: str, version: str) -> Source:
    """The :class:`Source` of ``dict-freedict-<x>-<y>``, neither language English."""
    x, y = pair.split("-")
    language, into = FREEDICT[x][0], FREEDICT[y][0]
    return Source(
        f"dict-freedict-{pair}",
        f"freedict_{'_'.join(sorted((x, y)))}",
        f"Translate {'an' if language[0] in 'AEIOU' else 'a'} {language} word into {into}",
        _freedict(x, y),
        f"FreeDict {pair} (FreeDict contributors): {FREEDICT_PAIR_LICENCES[version]}",
        name=f"freedict_{x}_{y}",
    )


FREEDICT_ARCHIVES = (
    *(
        DebArchive(f"dict-freedict-eng-{lang}", v, f"dict-freedict-eng-{lang}_{v}_all.deb", h)
        for lang, (v, h) in FREEDICT_DEBS.items()
    ),
    *(
        DebArchive(f"dict-freedict-{lang}-eng", v, f"dict-freedict-{lang}-eng_{v}_all.deb", h)
        for lang, (_, v, h, _) in FREEDICT_TO_ENGLISH.items()
    ),
    *(
        DebArchive(f"dict-freedict-{pair}", v, f"dict-freedict-{pair}_{v}_all.deb", h)
        for pair, (v, h) in FREEDICT_PAIRS.items()
    ),
)
"""The pinned ``dict-freedict-*`` packages: English -> X, X -> English, then the pairs."""

FREEDICT_SOURCES = (
    *(
        Source(
            f"dict-freedict-eng-{lang}",
            f"freedict_eng_{lang}",
            f"Translate an English word into {language}",
            _freedict("eng", lang),
            licence,
        )
        for lang, (language, licence) in FREEDICT.items()
    ),
    *(
        Source(
            f"dict-freedict-{lang}-eng",
            f"freedict_eng_{lang}",
            f"Translate {'an' if language[0] in 'AEIOU' else 'a'} {language} word into English",
            _freedict(lang, "eng"),
            f"FreeDict {lang}-eng (FreeDict contributors): {licence}",
            name=f"freedict_{lang}_eng",
        )
        for lang, (language, _, _, licence) in FREEDICT_TO_ENGLISH.items()
    ),
    *(_freedict_pair(pair, version) for pair, (version, _) in FREEDICT_PAIRS.items()),
)
"""The FreeDict task sources, in the same order as :data:`FREEDICT_ARCHIVES`."""
