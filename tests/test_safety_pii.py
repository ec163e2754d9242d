"""PII detection and redaction: validated detectors, redaction before the model, output leakage."""

from __future__ import annotations

from conftest import StaticRetriever

from bot.contracts import Draft, Message, Passage, Turn
from bot.pipeline import Pipeline, respond
from plugins.guards.pii import PIIGuard
from plugins.safety.pii import find_pii, iban_ok, luhn_ok, redact


def kinds(text: str) -> list[str]:
    return [f.kind for f in find_pii(text)]


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_detects_each_kind_and_ignores_lookalikes() -> None:
    assert kinds("mail me at jo.smith+kb@example.co.uk") == ["email"]
    assert kinds("card 4111 1111 1111 1111 please") == ["payment_card"]
    assert kinds("card 4111 1111 1111 1112 please") == []  # fails Luhn
    assert kinds("IBAN DE89 3704 0044 0532 0130 00") == ["iban"]
    assert kinds("call me on +44 20 7946 0958") == ["phone"]
    assert kinds("my SSN is 123-45-6789") == ["national_id"]
    assert kinds("身份证 11010519491231002X") == ["national_id"]
    assert kinds("order 10023456 arrived on 2026-11-02, invoice INV-2291") == []


def test_personal_data_written_straight_after_chinese_is_found() -> None:
    # Chinese puts no space before a number, and Python's \b sees none between a Chinese character and a digit.
    assert kinds("我的电话是13812345678，帮我查下订单") == ["phone"]
    assert kinds("卡号4111111111111111被扣了两次") == ["payment_card"]
    assert kinds("我的身份证号11010519491231002X，请核实") == ["national_id"]
    assert kinds("邮箱是wang.fang@example.com请回复") == ["email"]
    assert kinds("订单号KH-12345678还没发货") == []  # an order number is not personal data


def test_a_date_and_time_is_not_a_phone_number() -> None:
    # The date was only rejected when it was the whole match, and "2024-05-06 12" (with the hour) was not.
    assert kinds("I was charged twice on 2024-05-06 12:30, 49.99 each") == []
    assert kinds("扣款时间是2024-05-06 12:30，金额49.99") == []
    assert kinds("05/06/2024 09:15 double charge") == []
    assert kinds("my number is 415-555-0199") == ["phone"]


def test_redaction_uses_typed_placeholders() -> None:
    text = "I'm bob@example.com, card 4111111111111111"
    assert redact(text, find_pii(text)) == "I'm [e-mail address removed], card [payment card number removed]"


class Echo:
    name = "echo"

    async def stream(self, turn: Turn, passages: object):  # type: ignore[no-untyped-def]
        yield turn.text


async def test_model_never_sees_the_card_and_the_customer_is_told() -> None:
    passage = Passage("p#0", "Payments are taken at checkout.", 0.9, doc_id="payments")
    p = Pipeline([PIIGuard(PIIGuard.Config())], StaticRetriever([passage]), Echo())
    reply = await respond(Turn((Message("user", "why was 4111 1111 1111 1111 charged twice?"),)), p)
    assert "4111" not in reply.answer.split("\n\n")[0]
    assert "[payment card number removed]" in reply.answer
    assert "removed the payment card number" in reply.answer and not reply.refused


async def test_output_guard_removes_personal_data_not_in_passages() -> None:
    guard = PIIGuard(PIIGuard.Config())
    passages = [Passage("p#0", "Write to support@kestrelhome.example for help.", 0.9)]
    draft = Draft("Email support@kestrelhome.example or call John on +1 415 555 0132.")
    verdict = await guard.check_output(Turn((Message("user", "who do i contact"),)), draft, passages)
    assert verdict.rewrite == "Email support@kestrelhome.example or call John on [phone number removed]."
