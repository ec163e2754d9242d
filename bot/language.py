"""The customer's language, and the bot's own sentences (refusals, care, handoffs, "I don't know") in English and
Chinese.

Answers come from the knowledge base in its own language, but what the bot says *itself* follows the customer: a
customer writing Chinese who is refused, handed to a person or told that nothing was found reads it in Chinese, and
one in crisis gets crisis lines they can call. A message is Chinese when Chinese characters make up at least a
third of its letters, so a Chinese name in an English message does not switch the language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.contracts import Message, Turn

Language = Literal["en", "zh"]
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_WORD = re.compile(r"[^\W\d_]{2,}")  # a word of two letters or more (Chinese runs are caught by CJK first)


def mostly_chinese(text: str) -> bool:
    """Whether Chinese characters make up at least a third of `text`'s letters (a Chinese name in an English
    message does not count)."""
    letters = [c for c in text if c.isalpha()]
    chinese = sum(1 for c in letters if CJK.match(c))
    return bool(letters) and chinese * 3 >= len(letters)


def language_of(messages: Sequence[Message], default: Language = "en") -> Language:
    """The language to answer in: that of the customer's newest message that says enough to tell (a Chinese
    character, or two words in Latin letters), so "ok", "?" or an order number keeps the conversation's language;
    `default` when none does."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        if CJK.search(message.content):
            return "zh" if mostly_chinese(message.content) else "en"
        if len(_WORD.findall(message.content)) >= 2:
            return "en"
    return default


def language(turn: Turn) -> Language:
    """The language of `turn`'s customer: as the pipeline fixed it at the start of the turn, else worked out now."""
    return turn.language or language_of(turn.messages)


@dataclass(frozen=True)
class Phrase:
    """One thing the bot says, in English and in Chinese; `{name}` fields are filled in by `say`."""

    en: str
    zh: str

    def say(self, language: Language = "en", **fields: Any) -> str:
        """The sentence in `language`, its fields filled in."""
        return (self.zh if language == "zh" else self.en).format(**fields)

    def said_in(self, text: str) -> bool:
        """Whether `text` holds this phrase (a field-free one) in either language."""
        return self.en in text or self.zh in text


# The policy's own replies (bot/policy.py).
DEFAULT_REFUSAL = Phrase(
    "I'm sorry, I can't help with that request. I'm happy to help with your account, orders, billing or devices, "
    "or I can connect you with a member of our team.",
    "抱歉，这个请求我没法帮忙。账户、订单、账单或设备方面的问题我都很乐意帮您，也可以为您转接我们的工作人员。",
)
RISK_REFUSAL = Phrase(
    "I'm not able to help with that one, as it could cause harm. If there's something about your Kestrel account, "
    "an order or a device I can help with, just ask, or I can connect you with a member of our team.",
    "这个我没法帮忙，因为它可能造成伤害。如果有关于 Kestrel 账户、订单或设备的问题，请直接问我，"
    "或者我可以为您转接我们的工作人员。",
)
NO_KNOWLEDGE = Phrase(
    "I couldn't find this in our help centre, so I don't want to guess. "
    "Would you like me to connect you with a member of our support team?",
    "我在帮助中心里没有找到相关内容，不想随便猜测。需要我为您转接客服人员吗？",
)
RESPONDER_DOWN = Phrase(
    "I'm having trouble writing an answer right now, so I'm passing your question to a member of our support team; "
    "they'll see this conversation so far.",
    "我现在暂时无法给出回答，已把您的问题转给我们的客服人员；他们能看到我们到目前为止的对话。",
)
HANDOFF = Phrase(
    "I'm connecting you with a member of our support team now; they'll see this conversation so far.",
    "我现在就为您转接客服人员，他们能看到我们到目前为止的对话。",
)
NO_ANSWER = Phrase(
    "I'm not sure how to answer that from our help centre, so I don't want to guess. "
    "Would you like me to connect you with a member of our support team?",
    "我不确定怎样根据帮助中心的内容回答这个问题，不想随便猜测。需要我为您转接客服人员吗？",
)

# The guards' (plugins/guards/).
CARE = Phrase(
    "I'm really sorry you're feeling this way, and I'm glad you told me. You deserve support from a person right "
    "now: I'm connecting you with a member of our team. If you are in danger, please call your local emergency "
    "number, or reach a crisis line such as 988 in the US or 116 123 (Samaritans) in the UK and Ireland; they are "
    "there 24/7.",
    "听到您现在这么难受，我很难过，也谢谢您愿意告诉我。您值得有人好好陪您聊聊：我现在就为您转接我们的工作人员。"
    "如果您有危险，请马上拨打当地的急救电话（中国大陆 120 或 110），或者联系心理援助热线：中国大陆 12356 或 "
    "400-161-9995（希望24热线），香港 2389 2222（撒玛利亚防止自杀会），台湾 1925（安心专线）。",
)
HARMFUL = Phrase(
    "I can't help with anything involving {topic}. If you have a question about your Kestrel account, an order or "
    "a device, I'm glad to help.",
    "涉及{topic}的事情我没法帮忙。如果您有关于 Kestrel 账户、订单或设备的问题，我很乐意帮您。",
)
# What a refusal names, by harm category (HARMFUL's {topic}).
TOPICS = {
    "violence_weapons": Phrase("weapons or violence", "武器或暴力"),
    "drugs": Phrase("illegal drugs", "违禁药物"),
    "cybercrime": Phrase("hacking or malware", "黑客入侵或恶意软件"),
    "fraud_financial": Phrase("fraud or scams", "诈骗或欺诈"),
    "hate_harassment": Phrase("hate or harassment", "仇恨或骚扰"),
    "privacy_violation": Phrase("other people's personal data", "他人的个人信息"),
    "sexual": Phrase("sexual content", "色情内容"),
    "sexual_minors": Phrase("that kind of content", "这类内容"),
    "self_harm": Phrase("self-harm", "自我伤害"),
    "misinformation": Phrase("fake or misleading content", "虚假或误导性内容"),
}
OTHER_TOPIC = Phrase("that", "这类事情")
INSTRUCTIONS = Phrase(
    "I can't change how I work or share my internal instructions, but I'd be glad to help with a question about "
    "your account, orders, billing or devices.",
    "我不能改变自己的工作方式，也不能透露内部指令，但很乐意帮您解答账户、订单、账单或设备方面的问题。",
)
OFF_DOMAIN = Phrase(
    "That's outside what I can help with here: I'm Kestrel Home's support assistant. Ask me about your account, "
    "orders, returns, billing or Kestrel devices.",
    "这超出了我在这里能帮忙的范围：我是 Kestrel Home 的客服助手。"
    "您可以问我账户、订单、退货、账单或 Kestrel 设备方面的问题。",
)
FRUSTRATED = Phrase(
    "I'm sorry this has been frustrating. I'm connecting you with a member of our team now; they'll see our "
    "conversation so far.",
    "很抱歉给您带来这么多麻烦。我现在就为您转接我们的工作人员，他们能看到我们之前的对话。",
)
PROMPT_LEAK = Phrase(
    "I can't share my internal instructions, but I'm happy to help with your question.",
    "我不能透露内部指令，但很乐意帮您解答问题。",
)
EMPTY = Phrase("Your message was empty. What can I help you with?", "您的消息是空的。有什么可以帮您？")
TOO_LONG = Phrase(
    "Your message is too long for me ({chars:,} characters; the limit is {limit:,}). Could you shorten it to the "
    "key question?",
    "您的消息太长了（{chars:,} 个字符，上限是 {limit:,}）。能否精简成关键的问题？",
)
TOO_MANY_CHARACTERS = Phrase(  # a message over the server's limit, refused before any guard reads it
    "Your message has {chars:,} characters; the limit is {limit:,}.", "您的消息有 {chars:,} 个字符，上限是 {limit:,}。"
)
LONG_CONVERSATION = Phrase(
    "This conversation has grown very long. Please start a new one so I can help.",
    "这段对话已经很长了。请开始一段新的对话，我好继续帮您。",
)
REDACTED = Phrase(
    "For your safety I removed the {kinds} from your message; please don't share it in chat. Our team can verify "
    "you securely if needed.",
    "为了您的安全，我已从您的消息中删除了{kinds}；请不要在聊天中发送这类信息。如有需要，我们的团队可以通过安全的方式核实您的身份。",
)
