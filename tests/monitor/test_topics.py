from monitor.models import Mention
from monitor.topics import ALL_TOPIC, Topic, TopicMatcher


def m(text: str, title: str | None = None, topic: str | None = None) -> Mention:
    return Mention(id="dump:1", text=text, created_at=0.0, title=title, topic=topic)


def test_whole_words_and_phrases_case_insensitive() -> None:
    tm = TopicMatcher([Topic("acme", ("acme", "acme corp"))])
    assert tm.topics_of(m("I love ACME!")) == ("acme",)
    assert tm.topics_of(m("acme\tCORP  rocks")) == ("acme",)
    assert tm.topics_of(m("welcome to acmeville")) == ()
    assert tm.topics_of(m("the pacme thing")) == ()


def test_handles_and_tags_match_only_as_such() -> None:
    tm = TopicMatcher([Topic("acme", ("@acme", "#acmefail"))])
    assert tm.topics_of(m("hey @Acme fix this")) == ("acme",)
    assert tm.topics_of(m("so #AcmeFail today")) == ("acme",)
    assert tm.topics_of(m("acme without the at")) == ()
    assert tm.topics_of(m("mail me at bob@acme")) == ()
    assert tm.topics_of(m("#acmefailure is different")) == ()


def test_exclusions_win_and_title_counts() -> None:
    tm = TopicMatcher([Topic("acme", ("acme",), exclude=("acme hardware",))])
    assert tm.topics_of(m("Acme Hardware sale")) == ()
    assert tm.topics_of(m("broken again", title="Acme app")) == ("acme",)


def test_several_topics_and_pre_tagged_mentions() -> None:
    tm = TopicMatcher([Topic("acme", ("acme",)), Topic("rival", ("globex",))])
    assert tm.topics_of(m("acme vs globex")) == ("acme", "rival")
    assert tm.topics_of(m("no names here", topic="rival")) == ("rival",)


def test_no_topics_means_everything_under_all() -> None:
    tm = TopicMatcher([])
    assert tm.topics_of(m("anything")) == (ALL_TOPIC,)
    assert tm.prefilter_terms() is None


def test_match_terms_and_prefilter() -> None:
    tm = TopicMatcher.for_match(["@Acme", "acme corp"])
    assert tm.names == ("acme",)
    assert tm.prefilter_terms() == ["@acme", "acme"]
    assert TopicMatcher.for_match(["café"]).prefilter_terms() is None  # JSON may escape it


def test_the_fast_screen_never_hides_a_match() -> None:
    """Terms.search (screen, then exact pattern) agrees with the exact pattern alone."""
    import random
    import re

    from monitor.topics import Terms, term_pattern

    rng = random.Random(3)
    terms = ["acme", "acme corp", "@acme", "#acmefail", "data breach", "café", "Straße"]
    exact = re.compile("|".join(term_pattern(t) for t in terms), re.IGNORECASE)
    screened = Terms(terms)
    pieces = ["ACME", "acme", "Acme  CORP", "@Acme", "#ACMEfail", "data\tbreach", "CAFÉ",
              "STRASSE", "straße", "acmeville", "x@acme", "data", "breach", " ", ".", "\n",
              "é", "ß", "#", "@"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        assert bool(screened.search(text)) == bool(exact.search(text)), text
