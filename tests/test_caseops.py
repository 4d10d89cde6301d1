"""CaseOps (sota-stack §2.1): a bijection on arbitrary Unicode, whose per-character byte weights sum
to the original text's UTF-8 bytes."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, OPERATORS, TITLE, decode, encode, encode_with_bytes

CASED = st.text(alphabet=st.sampled_from("aAbBzZ éÉßẞİıǅǆΣσς\ue001\ue004 .,\n1"), max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), CASED))
def test_decode_inverts_encode_and_bytes_add_up(text):
    encoded, weights = encode_with_bytes(text)
    assert decode(encoded) == text
    assert len(weights) == len(encoded)
    assert sum(weights) == len(text.encode())
    # an inserted operator weighs 0; every other character weighs its own UTF-8 length (same as the
    # original character it stands for)
    literal = False
    for c, w in zip(encoded, weights, strict=True):
        if c in OPERATORS and not literal:
            assert w == 0
            literal = c == ESC
        else:
            assert w == len(c.encode())
            literal = False


def test_the_documented_example_and_each_operator():
    assert encode("The NASA Launch") == f"{TITLE}the {ALLCAPS}nasa {TITLE}launch"
    assert encode("McDonald iPhone") == f"{CAPNEXT}mc{CAPNEXT}donald i{CAPNEXT}phone"
    assert encode("A I") == f"{TITLE}a {TITLE}i"  # one letter: title, not all-caps
    assert encode(f"x{TITLE}y") == f"x{ESC}{TITLE}y"  # an operator in the text is escaped
    assert encode("already lower, 123!") == "already lower, 123!"
    # U+0130 lowercases to two characters: kept as it is, and its word is not factored
    assert encode("İSTANBUL") == f"İ{CAPNEXT}s{CAPNEXT}t{CAPNEXT}a{CAPNEXT}n{CAPNEXT}b{CAPNEXT}u{CAPNEXT}l"
    # U+1E9E (3 bytes) lowercases to ß (2 bytes): kept, so every character keeps its byte length
    assert encode("ẞ") == "ẞ" and decode(encode("STRAẞE")) == "STRAẞE"
