"""`short.short_answer`: a short span of the cited sentence for factoid questions, or None.

Handwritten sentences for each kind of question, the rules that keep a span honest (it must
say something the question does not; a near tie between candidates is no answer), and the
real desk on the bundled article.
"""

from __future__ import annotations

import pytest

from askdesk.answering.short import ALL_SHORT_KINDS, short_answer

FCC = "The FCC froze applications for new stations in October 1948, citing interference between stations."
PLITT = "In 1974, ABC sold Great States to Henry Plitt, a Chicago exhibitor."


@pytest.mark.parametrize("question,sentence,expected", [
    # date: the whole date expression, not just its year
    ("When did the FCC freeze applications for new stations?", FCC, "October 1948"),
    ("In what year did ABC sell Great States?", PLITT, "1974"),
    ("When did Trump welcome Ishiba to the White House?",
     "President Donald Trump welcomed Prime Minister Shigeru Ishiba to the White House on Friday, February 7, "
     "marking their first official meeting.", "Friday, February 7"),
    ("When did the plague reach its peak?", "The plague reached its peak in the late 1340s across Europe.", "late 1340s"),
    # number: with its currency, scale and unit
    ("How much did Capital Cities pay for ABC?",
     "Capital Cities bought ABC for $3.5 billion in a deal announced on March 18.", "$3.5 billion"),
    ("How many years separated the outbreaks?", "The outbreaks were separated by 5 to 15 years.", "5 to 15 years"),
    ("What percentage of the rainforest is in Brazil?",
     "Brazil holds 60 percent of the rainforest, followed by Peru.", "60 percent"),
    ("How long were the astronauts able to stay on the Moon?",
     "The extended module allowed the astronauts to stay on the Moon for three days.", "three days"),
    # person: the name, without the title in front of it
    ("Who was ABC Great States sold to in 1974?", PLITT, "Henry Plitt"),
    ("Who led the design studies?", "The design studies were led by Deputy Administrator Hugh L. Dryden.",
     "Hugh L. Dryden"),
    ("Who discussed Twigg's study?", "Twigg's study was discussed at length by Samuel K. Cohn, Jr. in 2002.",
     "Samuel K. Cohn, Jr"),
    # place
    ("Where was the cup final played?", "The cup final was played at Wembley in front of 90,000 fans.", "Wembley"),
    # name for "what/which <noun>": capitalised, with a number that completes it
    ("Which mission landed first on the Moon?", "In July 1969 the Moon landing of Apollo 11 came first.", "Apollo 11"),
    ("Which company was the lunar module built by?", "The lunar module was built by Grumman.", "Grumman"),
])
def test_each_kind_finds_its_span(question, sentence, expected):
    assert short_answer(question, sentence, kinds=ALL_SHORT_KINDS) == expected


def test_the_span_is_a_substring_of_the_sentence():
    span = short_answer("How much did Capital Cities pay for ABC?", "Capital Cities bought ABC for $3.5 billion.")
    assert span and span in "Capital Cities bought ABC for $3.5 billion."


def test_nothing_the_question_already_says():
    # The sentence has two names; the one the question asks about is not the answer.
    s = "Henry Plitt bought the theatres from ABC."
    assert short_answer("Who did Henry Plitt buy the theatres from?", s, kinds=ALL_SHORT_KINDS) == "ABC"
    assert short_answer("Who bought the theatres from ABC?", s, kinds=ALL_SHORT_KINDS) == "Henry Plitt"
    # The year in the question is not the answer to "when"; the other date is.
    assert short_answer("When in 1974 did ABC sell Great States?", "ABC sold Great States in 1974, on March 3.") \
        == "March 3"
    # Only the question's own year: nothing new to say.
    assert short_answer("What happened to ABC in what year, 1974?", "ABC sold Great States in 1974.") is None


def test_the_candidate_beside_the_question_words_wins():
    s = "The strike began in Leeds in 1972, two years before the walkout at the York plant in 1974."
    assert short_answer("When did the strike begin in Leeds?", s) == "1972"
    assert short_answer("When was the walkout at the York plant?", s) == "1974"


def test_the_name_after_the_questions_preposition_wins():
    # "sold to?": of two new names the one after "to" is the buyer.
    s = "Great States, the chain run by Balaban, was sold to Henry Plitt."
    assert short_answer("Who was the chain sold to?", s, kinds=ALL_SHORT_KINDS) == "Henry Plitt"


def test_none_when_nothing_fits():
    assert short_answer("When did the FCC freeze applications?", "The FCC froze applications for new stations.") is None
    assert short_answer("How many stations did ABC own?", "ABC owned stations in several large cities.") is None
    assert short_answer("Who founded ABC?", "the network was founded by a radio company.", kinds=ALL_SHORT_KINDS) is None
    assert short_answer("When did it happen?", "") is None


def test_none_for_questions_that_are_not_factoid():
    assert short_answer("Why did the FCC freeze applications?", FCC) is None
    assert short_answer("What did Ishiba say about Trump?", '"He is very sincere," Ishiba said in 2025.') is None


def test_none_when_two_candidates_tie():
    # Two dates, each as close to the question's words as the other: a guess is worse than nothing.
    assert short_answer("When did the strike happen?", "The strike happened in 1972 or in 1973.") is None


def test_names_are_off_by_default():
    s = "Paul Rand designed the logo in 1962."
    assert short_answer("Who designed the logo?", s) is None
    assert short_answer("Who designed the logo?", s, kinds=ALL_SHORT_KINDS) == "Paul Rand"
    assert short_answer("When was the logo designed?", s) == "1962"


def test_common_words_that_open_a_sentence_are_not_names():
    assert short_answer("Who designed the logo?", "However, the logo was designed by Paul Rand.", kinds=ALL_SHORT_KINDS) == "Paul Rand"
    assert short_answer("Who ordered the budget cuts?", "Budget cuts were ordered by Congress in 1970.", kinds=ALL_SHORT_KINDS) == "Congress"
    # "British bacteriologist": a nationality describing someone, not the someone.
    assert short_answer("Who challenged the plague theory first?",
                        "The theory was first challenged by British bacteriologist J. F. D. Shrewsbury.",
                        kinds=ALL_SHORT_KINDS) \
        == "J. F. D. Shrewsbury"


@pytest.mark.slow
@pytest.mark.parametrize("question,expected", [
    ("How big was Nippon Steel's bid for US Steel?", "$14.9 billion"),
    ("When did Trump welcome Ishiba to the White House?", "February 7"),
    ("When did Ishiba assume office?", "October"),
])
def test_real_desk_gives_the_short_answer(real_desk, question, expected):
    a = real_desk.ask(question)
    assert not a.refused and expected in a.short  # the reader's span: "February 7" or "Friday, February 7"
    assert a.short in a.citations[0].sentence
    assert a.to_dict()["short"] == a.short


@pytest.mark.slow
def test_real_desk_short_answer_to_an_open_question_is_a_short_span_of_the_cited_sentence(real_desk):
    """The reader gives open questions a short answer too when its span is short ("denuclearisation");
    a clause is never one (answering/read.py SHORT_MAX_WORDS)."""
    from askdesk.answering.read import SHORT_MAX_WORDS

    a = real_desk.ask("What did both leaders commit to regarding North Korea?")
    assert not a.refused and a.short and a.short in a.citations[0].sentence
    assert len(a.short.split()) <= SHORT_MAX_WORDS
