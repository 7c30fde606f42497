"""Deterministic English prompts and responses for the benchmarks.

Text is generated from a fixed vocabulary (about 900 words in parts of speech, picked with
Zipf-like weights, as words are in real English) by a small grammar of sentence shapes that
agents' prompts and models' answers use: questions, requests, explanations, numbered steps,
code identifiers, numbers and units. A seeded `random.Random` makes every run produce the
same text, so compression ratios are comparable between runs and honest: no sentence is
repeated wholesale the way lorem-ipsum filler is.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

__all__ = ["TextGen"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Most frequent first: the weights below fall off with the rank in each list.
NOUNS = _words(
    """
    data system user function model file request service error time value table query
    result code process memory agent session prompt response test change problem step way
    example issue question answer state event message output input type field record key
    server client database index cache network log path report version config option
    component module package library interface method class object variable parameter
    argument string number list array map set tree graph node edge pipeline job task worker
    thread lock queue batch buffer stream frame page block segment column row schema
    migration transaction connection timeout retry limit budget cost latency throughput
    performance metric dashboard alert deployment release build branch commit review team
    customer account invoice payment order product price discount shipment warehouse
    inventory supplier contract policy document summary paragraph sentence section chapter
    article draft outline note comment feedback proposal plan goal deadline meeting project
    roadmap milestone risk assumption constraint requirement feature bug fix patch workaround
    tradeoff decision reason approach strategy pattern architecture design layer boundary
    dependency container cluster region zone instance volume disk snapshot backup restore
    replica shard partition leader follower consensus quorum election heartbeat checkpoint
    token embedding vector dimension score threshold weight gradient epoch dataset sample
    label feature_set prediction accuracy precision recall baseline benchmark experiment
    hypothesis observation measurement distribution average median percentile variance
    histogram trend spike outage incident postmortem runbook owner stakeholder manager
    engineer analyst designer writer student teacher course lesson exercise homework exam
    grade recipe ingredient oven temperature minute hour day week month year morning evening
    weekend holiday trip flight hotel city country language translation word letter email
    calendar invitation agenda spreadsheet chart slide presentation audience story character
    scene dialogue tone style voice audience_segment campaign channel brand market competitor
    revenue margin forecast quarter headcount hiring interview candidate offer salary benefit
    algorithm heuristic invariant assertion fixture mock stub harness coverage regression
    profile flamegraph bottleneck hotspot allocation leak pointer reference handle socket
    port protocol header payload body cookie certificate key_pair signature hash checksum
    permission role group tenant organization workspace folder directory archive bucket
    object_store endpoint route controller view template widget button form modal tooltip
    notification badge avatar thumbnail image video audio transcript caption subtitle
    podcast newsletter blog website browser extension plugin theme layout grid typography
    palette contrast accessibility localization currency timezone locale keyboard shortcut
    terminal shell script cron daemon kernel driver firmware device sensor battery charger
    printer scanner camera microphone speaker headset monitor laptop desktop tablet phone
    router firewall proxy gateway balancer mirror registry artifact image_tag manifest chart
    secret vault credential password username login logout signup onboarding checkout cart
    wishlist coupon refund chargeback dispute subscription plan_tier trial renewal churn
    retention cohort funnel conversion impression click visit bounce session_length
    farmer river mountain forest garden kitchen bicycle train station airport museum library_card
    hospital clinic doctor nurse patient symptom diagnosis treatment medicine appointment
    lawyer court judge case_file evidence witness verdict appeal statute clause amendment
    novel poem essay thesis citation bibliography footnote appendix glossary preface
    """
)

VERBS = _words(
    """
    use make need want check run add remove update create return handle read write store
    load save send receive parse validate compare explain describe summarize rewrite improve
    fix debug test deploy configure install upgrade migrate refactor optimize measure
    monitor track log retry cache index query filter sort group merge split join combine
    convert format encode decode compress decompress serialize render generate translate
    review approve reject schedule cancel assign delegate escalate notify remind document
    outline draft edit shorten expand simplify clarify prioritize estimate plan prepare
    analyze investigate reproduce isolate identify detect prevent reduce increase limit
    throttle batch stream flush sync replicate backup restore rotate archive delete purge
    expose hide wrap call invoke trigger schedule_run subscribe publish consume produce
    allocate release acquire block wait poll recover fail succeed skip ignore accept reject
    support replace extend override implement design structure organize rename move copy
    inspect verify confirm question challenge justify argue persuade negotiate discuss
    present demonstrate illustrate visualize plot chart annotate highlight underline
    search browse download upload share export import print scan sign encrypt decrypt
    authenticate authorize grant revoke rotate_key provision decommission scale resize
    shard rebalance partition warm evict expire invalidate prefetch preload lazy_load
    paginate truncate pad align indent wrap_text tokenize stem lemmatize classify cluster
    rank recommend personalize forecast_demand simulate model_risk audit reconcile settle
    invoice bill refund charge ship pack deliver track_parcel return_item exchange
    cook bake boil chop mix taste season serve plate garnish book travel pack_bag visit
    """
)

ADJECTIVES = _words(
    """
    new old current previous next first last main simple complex small large fast slow
    good bad better best clear short long full empty valid invalid correct wrong missing
    extra important useful common rare specific general local remote global internal
    external public private shared unique stable flaky reliable robust fragile secure
    unsafe expensive cheap efficient concurrent parallel sequential asynchronous durable
    temporary permanent optional required default custom manual automatic dynamic static
    typed raw compressed encrypted cached stale fresh recent historical daily weekly
    monthly quarterly annual detailed brief formal informal friendly polite concise
    verbose readable consistent inconsistent accurate approximate realistic reasonable
    strict lenient safe risky urgent minor major critical noisy quiet busy idle healthy
    degraded broken partial complete incremental initial final average typical maximum
    minimum relevant obvious subtle hidden visible legacy modern lightweight heavy
    elegant clumsy awkward graceful bright dark warm cold hot humid dry wet sharp blunt
    smooth rough narrow wide deep shallow tall short_lived ancient young mature juicy
    crisp bitter sweet salty sour spicy mild bold faint loud silent honest curious eager
    anxious calm patient impatient generous careful careless thoughtful rigorous sloppy
    scalable portable composable testable observable idempotent deterministic lossy
    lossless sparse dense nested flat hierarchical relational columnar distributed
    centralized federated regional multilingual bilingual quantitative qualitative
    experimental stable_release deprecated unsupported preferred recommended mandatory
    """
)

ADVERBS = _words(
    """
    quickly slowly carefully clearly usually often sometimes rarely always never already
    still just only probably certainly simply directly automatically manually safely
    correctly roughly exactly efficiently concurrently gradually immediately eventually
    briefly explicitly implicitly consistently reliably frankly honestly largely mostly
    mainly partly fully barely hardly nearly quietly loudly politely firmly gently
    strictly loosely precisely approximately typically ideally
    """
)

PREPOSITIONS = _words(
    "in on for with from to into by at about over under after before during between "
    "through without within across against per via behind toward"
)
DETERMINERS = _words("the the the a a this that each every our your their its some any no")
PLURAL_DETERMINERS = _words("the the these those our your their some many all several two three")
MODALS = _words("can should will might must could would")
CONNECTORS = _words(
    "However, Also, Then, Otherwise, Meanwhile, Finally, In practice, For example, "
    "As a result, On the other hand, In short, Note that"
)
NAMES = _words(
    """
    Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert
    Sybil Trent Victor Walter Yasmin Zoe Postgres Redis Kafka DuckDB SQLite Python Rust Go
    TypeScript React Django FastAPI Kubernetes Docker Terraform Linux GitHub Slack Jira
    Berlin Paris Tokyo Lisbon Toronto Nairobi Sydney Monday Tuesday Friday January March
    Priya Mateo Aiko Chen Fatima Lars Ingrid Kwame Sofia Dmitri Amara Hiroshi Lucia Omar
    Nginx Spark Airflow Snowflake BigQuery Pandas NumPy PyTorch Elasticsearch Grafana
    Prometheus Jenkins Vercel Stripe Salesforce Zendesk Notion Figma Madrid Seoul Cairo
    Oslo Denver Chicago Mumbai Jakarta Lagos Lima Wednesday Thursday April June September
    """
)
UNITS = _words("ms s minutes hours days MB GB KB requests users rows events percent tokens")
IDENT_PARTS = _words(
    "user order item event session token cache retry batch config path count total id "
    "name status result payload handler client worker queue limit index offset buffer"
)

PROMPT_OPENERS = (
    "Can you",
    "Could you please",
    "Please",
    "I need you to",
    "Help me",
    "I would like you to",
    "Would you",
    "Quickly",
)
PROMPT_ASKS = _words(
    "explain summarize review rewrite debug compare outline draft improve analyze "
    "translate simplify estimate design document plan"
)
RESPONSE_OPENERS = (
    "Sure, here is an overview.",
    "Good question.",
    "Short answer: it depends on the workload.",
    "Here is what I found.",
    "There are a few things to check.",
    "Let me walk through it step by step.",
    "The main issue is the order of operations.",
    "Based on the details you gave,",
)


def _cum_weights(n: int, s: float = 0.9) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 2) ** s for rank in range(n)))


_VOWELS = "aeiou"


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def _third_person(verb: str) -> str:
    return _plural(verb)  # the same spelling rules: fixes, queries, runs


_DOUBLE = frozenset(
    _words(
        "run set plan ship chop skip wrap stop split plot submit commit drop pad scan log stem "
        "bet cut put shop"
    )
)
_IRREGULAR_PAST = {
    "make": "made",
    "run": "ran",
    "send": "sent",
    "write": "wrote",
    "read": "read",
    "build": "built",
    "split": "split",
    "hide": "hid",
    "set": "set",
    "cut": "cut",
    "put": "put",
    "bet": "bet",
    "choose": "chose",
    "find": "found",
    "take": "took",
}


def _stem(verb: str) -> str:
    return verb + verb[-1] if verb in _DOUBLE else verb


def _past(verb: str) -> str:
    if verb in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ied"
    return _stem(verb) + "ed"


def _gerund(verb: str) -> str:
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return _stem(verb) + "ing"


def _article(word: str) -> str:
    return "an" if word[0] in _VOWELS else "a"


class TextGen:
    """Seeded generator of prompts and responses of 300-800 characters."""

    def __init__(self, seed: int = 20240501) -> None:
        self._rng = random.Random(seed)
        self._weights: dict[int, list[float]] = {}

    def _pick(self, words: Sequence[str]) -> str:
        w = self._weights.get(len(words))
        if w is None:
            w = self._weights[len(words)] = _cum_weights(len(words))
        return self._rng.choices(words, cum_weights=w)[0]

    def _noun_phrase(self) -> tuple[str, bool]:
        """A noun phrase and whether it is plural."""
        rng = self._rng
        if rng.random() < 0.12:
            return self._pick(NAMES), False
        noun = self._pick(NOUNS).replace("_", " ")
        adjective = self._pick(ADJECTIVES).replace("_", "-") if rng.random() < 0.5 else None
        plural = rng.random() < 0.3
        if plural:
            noun = _plural(noun)
            det = self._pick(PLURAL_DETERMINERS)
        else:
            det = self._pick(DETERMINERS)
            if det == "a":
                det = _article(adjective or noun)
        parts = [det, adjective, noun] if adjective else [det, noun]
        roll = rng.random()
        if roll < 0.1:
            parts.append(f"of {self._pick(NAMES)}")
        elif roll < 0.16:
            parts.append(f"that {self._verb_phrase(plural)} {self._np()}")
        return " ".join(parts), plural

    def _np(self) -> str:
        return self._noun_phrase()[0]

    def _pp(self) -> str:
        return f"{self._pick(PREPOSITIONS)} {self._np()}"

    def _ident(self) -> str:
        rng = self._rng
        name = "_".join(self._pick(IDENT_PARTS) for _ in range(rng.randint(2, 3)))
        return f"`{name}()`" if rng.random() < 0.5 else f"`{name}`"

    def _quantity(self) -> str:
        rng = self._rng
        value = rng.choice(
            (rng.randint(2, 99), rng.randint(100, 9999), round(rng.random() * 10, 1))
        )
        return f"{value} {self._pick(UNITS)}"

    def _object(self) -> str:
        roll = self._rng.random()
        if roll < 0.08:
            return self._ident()
        if roll < 0.14:
            return self._quantity()
        return self._np()

    def _verb_phrase(self, plural: bool) -> str:
        rng = self._rng
        verb = self._pick(VERBS).replace("_", " ")
        head, _, rest = verb.partition(" ")
        tail = f" {rest}" if rest else ""
        roll = rng.random()
        if roll < 0.42:
            return (head if plural else _third_person(head)) + tail
        if roll < 0.62:
            return _past(head) + tail
        if roll < 0.78:
            return f"{self._pick(MODALS)} {verb}"
        if roll < 0.9:
            return f"{'are' if plural else 'is'} {_gerund(head)}{tail}"
        return f"{'have' if plural else 'has'} {_past(head)}{tail}"

    def _clause(self) -> str:
        rng = self._rng
        subject, plural = self._noun_phrase()
        parts = [subject]
        if rng.random() < 0.2:
            parts.append(self._pick(ADVERBS))
        parts += [self._verb_phrase(plural), self._object()]
        for _ in range(rng.choice((0, 1, 1, 2))):
            parts.append(self._pp())
        return " ".join(parts)

    def _sentence(self) -> str:
        rng = self._rng
        roll = rng.random()
        if roll < 0.14:
            text = f"{self._pick(CONNECTORS)} {self._clause()}"
        elif roll < 0.24:
            text = f"If {self._clause()}, {self._clause()}"
        elif roll < 0.32:
            text = f"{self._clause()} because {self._clause()}"
        elif roll < 0.38:
            text = f"{self._clause()}, while {self._clause()}"
        elif roll < 0.43:
            adverb, verb = self._pick(ADVERBS), self._verb_phrase(True)
            text = f"When {self._clause()}, {adverb} {verb} {self._np()}"
        elif roll < 0.48:
            verb = "are" if rng.random() < 0.5 else "were"
            text = f"There {verb} {self._quantity()} {self._pp()}"
        elif roll < 0.52:
            text = f"{self._pp()}, {self._clause()}"
        else:
            text = self._clause()
        return text[0].upper() + text[1:] + "."

    def _question(self) -> str:
        subject, plural = self._noun_phrase()
        verb = self._pick(VERBS).replace("_", " ")
        aux = "do" if plural else "does"
        opener = self._rng.choice(("Why", "How", "When", "Where", "Which step of the plan"))
        return f"{opener} {aux} {subject} {verb} {self._object()} {self._pp()}?"

    def _fill(self, parts: list[str], low: int, high: int, extra: list[str]) -> str:
        target = self._rng.randint(low, high)
        text = " ".join(parts)
        while len(text) < target:
            parts.append(extra.pop(0) if extra else self._sentence())
            text = " ".join(parts)
        if len(text) > high:  # cut at a word boundary and close the sentence
            text = text[: high - 1].rsplit(" ", 1)[0].rstrip(",;:") + "."
        return text

    def prompt(self) -> str:
        """A user's or agent's prompt: context sentences, a request, constraints."""
        rng = self._rng
        parts = [self._sentence() for _ in range(rng.randint(1, 3))]
        ask = self._pick(PROMPT_ASKS)
        parts.append(f"{rng.choice(PROMPT_OPENERS)} {ask} {self._np()} {self._pp()}?")
        extra = [self._question(), self._sentence(), f"Keep it under {self._quantity()}."]
        rng.shuffle(extra)
        return self._fill(parts, 300, 800, extra)

    def response(self) -> str:
        """A model's answer: an opener, explanation, sometimes numbered steps."""
        rng = self._rng
        parts = [rng.choice(RESPONSE_OPENERS), self._sentence()]
        extra = []
        if rng.random() < 0.5:
            extra = [f"{i}. {self._sentence()}" for i in range(1, rng.randint(3, 6))]
        return self._fill(parts, 300, 800, extra)

    def prompts(self, count: int) -> list[str]:
        return [self.prompt() for _ in range(count)]

    def responses(self, count: int) -> list[str]:
        return [self.response() for _ in range(count)]
