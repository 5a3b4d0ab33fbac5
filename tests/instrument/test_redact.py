"""PII redaction corpus: every listed positive is redacted, every ordinary string stays intact."""

from __future__ import annotations

import pytest

from watcher.instrument.redact import Redactor, iban_ok, luhn_ok, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

# (text, kind, the exact PII substring)
POSITIVES: list[tuple[str, str, str]] = [
    ("mail me at jane.doe@example.com please", "email", "jane.doe@example.com"),
    ("Contact: j_smith+llm@mail.co.uk.", "email", "j_smith+llm@mail.co.uk"),
    ("<ADMIN@CORP.EXAMPLE.ORG>", "email", "ADMIN@CORP.EXAMPLE.ORG"),
    ("from bob.o'reilly? no: bob.oreilly@sub.domain.io wrote", "email", "bob.oreilly@sub.domain.io"),
    ("cc:x1@y.dev", "email", "x1@y.dev"),
    ("user=first.last@company-name.com;", "email", "first.last@company-name.com"),
    ("support@xn--bcher-kva.example", "email", "support@xn--bcher-kva.example"),
    ("call +1 415 555 2671 now", "phone", "+1 415 555 2671"),
    ("phone: +44 20 7946 0958", "phone", "+44 20 7946 0958"),
    ("tel +49 (30) 1234567", "phone", "+49 (30) 1234567"),
    ("ring (415) 555-2671 today", "phone", "(415) 555-2671"),
    ("my cell is 415-555-2671.", "phone", "415-555-2671"),
    ("fax 212.555.0199", "phone", "212.555.0199"),
    ("at 650 253 0000 ext", "phone", "650 253 0000"),
    ("UK office 020 7946 0958", "phone", "020 7946 0958"),
    ("portable 06 12 34 56 78", "phone", "06 12 34 56 78"),
    ("+33612345678 is French", "phone", "+33612345678"),
    ("whatsapp +91-98765-43210", "phone", "+91-98765-43210"),
    ("card 4111 1111 1111 1111 exp 12/29", "card", "4111 1111 1111 1111"),
    ("pay with 5555555555554444", "card", "5555555555554444"),
    ("amex 3782 822463 10005", "card", "3782 822463 10005"),
    ("discover: 6011-1111-1111-1117", "card", "6011-1111-1111-1117"),
    ("jcb 3530111333300000", "card", "3530111333300000"),
    ("visa 4012888888881881.", "card", "4012888888881881"),
    ("mc 5105 1051 0510 5100", "card", "5105 1051 0510 5100"),
    ("371449635398431 amex", "card", "371449635398431"),
    ("6011000990139424", "card", "6011000990139424"),
    ("mc2 2223003122003222", "card", "2223003122003222"),
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", "iban", "DE89 3704 0044 0532 0130 00"),
    ("GB82 WEST 1234 5698 7654 32", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("to FR1420041010050500013M02606.", "iban", "FR1420041010050500013M02606"),
    ("NL91ABNA0417164300", "iban", "NL91ABNA0417164300"),
    ("ES9121000418450200051332 ok", "iban", "ES9121000418450200051332"),
    ("IT60X0542811101000000123456", "iban", "IT60X0542811101000000123456"),
    ("CH9300762011623852957", "iban", "CH9300762011623852957"),
    ("BE68539007547034", "iban", "BE68539007547034"),
    ("SSN 123-45-6789", "ssn", "123-45-6789"),
    ("ssn: 078-05-1120.", "ssn", "078-05-1120"),
    ("social 219 09 9999", "ssn", "219 09 9999"),
    ("id 536-90-4399 on file", "ssn", "536-90-4399"),
    ("server 192.168.1.20 is down", "ip", "192.168.1.20"),
    ("from 10.0.0.1:", "ip", "10.0.0.1"),
    ("client=203.0.113.77,", "ip", "203.0.113.77"),
    ("subnet 172.16.0.0/12", "ip", "172.16.0.0/12"),
    ("8.8.8.8", "ip", "8.8.8.8"),
    ("v6 2001:db8::1 up", "ip", "2001:db8::1"),
    ("link fe80::1ff:fe23:4567:890a%eth0", "ip", "fe80::1ff:fe23:4567:890a%eth0"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("loopback ::1 only", "ip", "::1"),
    ("key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345", "secret", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345"),
    ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx1234", "secret", "sk-abcdefghijklmnopqrstuvwx1234"),
    ("sk-ant-api03-AAAAbbbbCCCCddddEEEEffff", "secret", "sk-ant-api03-AAAAbbbbCCCCddddEEEEffff"),
    ("token ghp_0123456789abcdefghijABCDEFGHIJ012345", "secret", "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
    ("aws AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
    ("google AIzaSyA1234567890abcdefghijklmnopqrstuv", "secret", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("slack xoxb-123456789012-abcdefABCDEF", "secret", "xoxb-123456789012-abcdefABCDEF"),
    ("Authorization: Bearer abc123DEF456ghi789JKL", "secret", "abc123DEF456ghi789JKL"),
    ("jwt " + JWT, "secret", JWT),
    ("password: hunter2hunter2", "secret", "hunter2hunter2"),
    ('{"api_key": "Zx9-ab12-CD34-ef56"}', "secret", "Zx9-ab12-CD34-ef56"),
    ("hf_abcdefghijklmnopqrstuvwxyzABCDEF12", "secret", "hf_abcdefghijklmnopqrstuvwxyzABCDEF12"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("glpat-xxxxxxxxxxxxxxxxxxxx1", "secret", "glpat-xxxxxxxxxxxxxxxxxxxx1"),
    (
        "anthropic sk-ant-admin01-AAAAbbbbCCCCddddEEEEffff",
        "secret",
        "sk-ant-admin01-AAAAbbbbCCCCddddEEEEffff",
    ),
]

NEGATIVES: list[str] = [
    "Your order #123456789 has shipped.",
    "Order number 4111111111111112 (not a card: checksum fails)",
    "Invoice INV-2024-000123 is due.",
    "Tracking 1Z999AA10123456784",
    "ORD-555-123-4567 is your reference",
    "Meeting on 2024-01-15 at 10:30.",
    "Deadline 15/01/2024, reminder 01.02.2025",
    "Timestamp 2026-05-01T12:30:45Z",
    "It happened at 12:30:45 local time.",
    "Released version 1.2.3 today",
    "Upgrade to v2.10.0 or 10.0.19045.2965",
    "Python 3.11.4 and numpy 1.26.4",
    "Total: $1,234.56 including tax",
    "Price 1.299,00 EUR",
    "Costs 19.99 USD, 2 for 35.00",
    "We sold 1,000,000 units in 2023.",
    "Population 8 000 000 people",
    "Unix epoch 1700000000 seconds",
    "Epoch millis 1700000000000",
    "The answer is 42.",
    "Room 101, floor 3, building 7",
    "ISBN 978-3-16-148410-0",
    "Ratio 3:2 and scale 16:9",
    "Score 0.95 with p < 0.001",
    "Chapter 3.4.5 covers this",
    "HTTP/1.1 200 OK",
    "UUID 123e4567-e89b-12d3-a456-426614174000",
    "commit a0377dc4f1b2",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "The IBAN field was left blank.",
    "DE12 is a postcode prefix, not an IBAN",
    "GB00 TEST 0000 0000 0000 00 fails mod-97",
    "SSN format is XXX-XX-XXXX",
    "000-12-3456 is not a valid SSN",
    "666-12-3456 is never issued",
    "Part no. 900-12-3456",
    "Version 300.400.500.600",
    "Octets 256.1.1.1 are out of range",
    "Build 1.2.3.4.5",
    "MAC 00:1a:2b:3c:4d:5e",
    "Time range 09:00-17:00",
    "a::b is a C++ scope",
    "std::vector<int> v;",
    "Email us via the contact form",
    "user at example dot com",
    "@mention someone in the chat",
    "name@localhost is not routable",
    "Call extension 2671",
    "Dial 911 in an emergency",
    "Code 555-0199",
    "Phone number format: +1",
    "Reference 12 34 56",
    "Flight LH 400 at gate 12",
    "sk-short is not a key",
    "token: short",
    "the password is in the vault",
    "Bearer tokens must be rotated",
    "eyJ alone is just base64 of '{'",
    "skeleton-key-manager is a package",
    "AKIA is an AWS prefix",
    "temperature 0.2, top_p 0.9, max_tokens 256",
    "Coordinates 52.5200, 13.4050",
    "Matrix 3x4, 12 cells",
    "The year 1999 was long ago",
    "Bank code 37040044 and account 0532013000",
]


def test_corpus_sizes() -> None:
    assert len(POSITIVES) >= 60 and len(NEGATIVES) >= 60


@pytest.mark.parametrize(("text", "kind", "pii"), POSITIVES)
def test_positives_are_redacted(text: str, kind: str, pii: str) -> None:
    assert pii in text
    out = redact(text)
    assert pii not in out, out
    assert f"[{kind.upper()}]" in out, out
    assert out == text.replace(pii, f"[{kind.upper()}]"), out  # exactly the PII, nothing around it


@pytest.mark.parametrize("text", NEGATIVES)
def test_negatives_stay_intact(text: str) -> None:
    assert redact(text) == text


def test_custom_patterns_and_kind_selection() -> None:
    r = Redactor(kinds=["email"], patterns={"employee_id": r"\bEMP-\d{6}\b"})
    assert r.redact("EMP-123456 mailed a@b.io from 10.0.0.1") == "[EMPLOYEE_ID] mailed [EMAIL] from 10.0.0.1"
    with pytest.raises(ValueError, match="unknown redaction kind"):
        Redactor(kinds=["dna"])


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_several_findings_in_one_text() -> None:
    text = "Jane (jane@x.org, +1 415 555 2671) paid with 4111-1111-1111-1111 from 10.1.2.3"
    assert redact(text) == "Jane ([EMAIL], [PHONE]) paid with [CARD] from [IP]"


# Issue 18, finding 7: each row was missed (or mangled) by the redactor before; the exact output.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GAPS: list[tuple[str, str]] = [
    # Authorization headers, whatever the scheme and however short the credential
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [SECRET]"),
    ("authorization: bearer abc.def", "authorization: bearer [SECRET]"),
    (
        'curl -H "Authorization: token gh12" https://api',
        'curl -H "Authorization: token [SECRET]" https://api',
    ),
    ('{"Authorization": "Bearer t0k"}', '{"Authorization": "Bearer [SECRET]"}'),
    ("Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Proxy-Authorization: Basic [SECRET]"),
    ("send Basic dXNlcjpwYXNzd29yZA== as the header", "send Basic [SECRET] as the header"),
    # AWS secret access keys (40 base64 characters next to aws/secret/access)
    (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = [SECRET]"),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "AWS_SECRET_ACCESS_KEY=[SECRET]"),
    (f"the AWS secret is {AWS_SECRET}.", "the AWS secret is [SECRET]."),
    # provider API keys in the forms the old patterns cut short or missed
    ("google AIzaSyA1234567890abcdefghijklmnopqrstu- ok", "google [SECRET] ok"),
    ("slack xapp-1-A0123456789-0123456789012-abcdef", "slack [SECRET]"),
    ("xoxe-1-My0xLTY2ODI3NDk2MDQtMTIz rotated", "[SECRET] rotated"),
    (
        "hook https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX end",
        "hook https://[SECRET] end",
    ),
    # ten-digit phone numbers without separators (North American plan, optional leading 1)
    ("call 4155552671 now", "call [PHONE] now"),
    ("sms to 14155552671.", "sms to [PHONE]."),
    # card numbers printed with dots (Luhn-checked)
    ("card 4111.1111.1111.1111 exp 12/29", "card [CARD] exp 12/29"),
    ("amex 3782.822463.10005", "amex [CARD]"),
    # e-mail addresses with letters beyond ASCII
    ("mail jürgen.müller@example.de today", "mail [EMAIL] today"),
    ("josé@exämple.com wrote", "[EMAIL] wrote"),
    ("用户@例子.广告", "[EMAIL]"),
    # passwords in prose and in key: value form, however short
    ("password is hunter2", "password is [SECRET]"),
    ("password: hunter2", "password: [SECRET]"),
    ("my password was 'swordfish' until today", "my password was '[SECRET]' until today"),
    ("DB_PASSWORD=s3cr3t!", "DB_PASSWORD=[SECRET]"),
    ("The passphrase is c0rrect-horse.", "The passphrase is [SECRET]."),
    # lowercase IBANs, bank code included
    ("iban de89 3704 0044 0532 0130 00 thanks", "iban [IBAN] thanks"),
    ("to gb82west12345698765432", "to [IBAN]"),
]

# The first four were redacted before (finding 7); the rest guard the new patterns against over-reach.
NO_FALSE_POSITIVES: list[str] = [
    "see report@2x.png for the chart",
    "icon@3x.webp and logo@1.5x.jpg",
    "Section 1.2.3.4 explains it",
    "See clause 2.1.4.3 and §1.1.1.1",
    "a basic understanding of Python",
    "Authorization is required for this endpoint",
    "max_tokens: 4096",
    "the password is correct",
    "password reset link expired",
    f"sha1 {AWS_SECRET} of the file",
    "ZZ12 ABCD EFGH IJKL is not a country",
    "Order 1234567890 shipped",
]


@pytest.mark.parametrize(("text", "expected"), GAPS)
def test_gaps_are_redacted_exactly(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", NO_FALSE_POSITIVES)
def test_no_false_positives(text: str) -> None:
    assert redact(text) == text


def test_real_ips_still_redacted_beside_numbering() -> None:
    assert redact("DNS 1.1.1.1, see section 4.2") == "DNS [IP], see section 4.2"
