"""The `instruction_override` guard: a basic detector of attempts to override the bot's instructions."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict
from bot.language import INSTRUCTIONS, language

# One rule of a refusal-suppression attack: no apologies, no refusals, no disclaimers, no "I can't".
_SUPPRESS = (
    r"(\b(do not|don't|never)\s+(apologi[sz]e|refuse|say (that )?you can'?t|use the words?"
    r"|(include|add) (any )?(notes?|warnings?|disclaimers?))|\badd no (notes?|warnings?|disclaimers?))"
)

# Each pattern is a family of competing-objectives attack (Wei et al. 2023), written from our own examples.
PATTERNS: dict[str, str] = {
    "ignore_previous": r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(previous|prior|above|earlier|all|your|system)\b"
    r".{0,30}\b(instructions?|prompts?|rules?|guidelines?|directives?|programming)\b",
    "system_prompt_request": r"\b(reveal|show|print|repeat|output|tell me|what (is|are))\b.{0,30}\b(system|initial|hidden|original)"
    r"\s+(prompt|instructions?|message)",
    "fake_system": r"(^|\n)\s*(\[?\s*(system|developer|admin)\s*(message|note|override)?\s*\]?\s*:|<\|?(system|im_start)\|?>)",
    # Two of the attack's rules together, or one in the attack's own words. One impatient imperative is how angry
    # customers talk ("please don't refuse my refund", "don't apologise, just fix my hub"), and was refused as an attack.
    "refusal_suppression": _SUPPRESS
    + r".{0,300}?"
    + _SUPPRESS
    + r"|(?<!you )\bnever\s+(refuse|apologi[sz]e)|\b(do not|don't)\s+refuse\s+(anything|any\b|to answer)"
    + r"|\b(never say|do not use|don't use)\s+(the\s+words?\b|[\"'‘“])|\b(do not|don't)\s+(include|add)\s+(any\s+)?disclaimers?\b",
    "prefix_injection": r"\b(start|begin)\s+(your|the)\s+(response|answer|reply)\s+with\s+[\"'“]",
    "roleplay": r"\b(you are now|pretend (to be|you are)|act as|roleplay as|from now on you)\b.{0,40}"
    r"\b(DAN|unfiltered|uncensored|jailbroken|no (rules|restrictions|limits)|evil|without (any )?(rules|restrictions|filters))",
    "developer_mode": r"\b(developer|god|jailbreak|dan)\s+mode\b",
}
# The same families in Chinese (an attack in another language is one the English patterns never see). Chinese has
# no spaces, so the gaps are bounded by characters and stop at a sentence end. No `fake_system` here: "系统：安卓14"
# ("system: Android 14") is how customers describe their phone.
_GAP = r"[^。！？!?\n]{0,12}"
PATTERNS_ZH: dict[str, str] = {
    "ignore_previous": r"(忽略|无视|忘掉|忘记|不要管|别管|不用管|作废|失效)"
    + _GAP
    + r"(之前|以前|上面|前面|先前|开头|所有|全部|你的|系统)"
    + _GAP
    + r"(指令|指示|提示词|规则|设定|规定|要求|系统消息)"
    + r"|(之前|以前|上面|前面|原来)的?(指令|规则|设定|系统消息)"
    + _GAP
    + r"(作废|失效|清除|不算数|不用管)",
    "system_prompt_request": r"(告诉我|说出|显示|输出|打印|重复|发给我|给我看|透露|念|列出|泄露)"
    + _GAP
    + r"(系统提示词?|系统指令|系统消息|初始指令|隐藏指令|原始指令|内部指令|提示词)"
    + r"|(系统提示词?|系统指令|初始指令|隐藏指令|原始指令|内部指令)"
    + _GAP
    + r"(是什么|发给我|告诉我|给我看|输出|打印|念出来|说出来|贴出来|复制)",
    # Only the attack's own forms: an angry customer says 别拒绝我的退款 or 别道歉了 ("stop apologising"), but rarely
    # quotes the words the bot must not say.
    "refusal_suppression": r"(不要|不许|不准|禁止|别)(再)?(拒绝回答|说[“\"「](我)?(不能|无法|做不到|抱歉))"
    + r"|(不要|不许|不准|别)(加|给我|写)(任何)?(警告|免责声明|安全提示)",
    "prefix_injection": r"(以|用)[“\"「][^”\"」\n]{1,30}[”\"」](作为)?(开头|开始)",
    "roleplay": r"(你现在是|从现在(开始|起)你(就)?是|扮演|假装你是|你是一个)"
    + _GAP
    + r"(没有任何?(规则|限制|约束|审查|过滤)|不受任何?(规则|限制|约束)|无限制|无审查|越狱|邪恶)",
    "developer_mode": r"(开发者|上帝|越狱|无限制)模式",
}
_COMPILED = {
    name: re.compile(p + ("|" + PATTERNS_ZH[name] if name in PATTERNS_ZH else ""), re.IGNORECASE | re.DOTALL)
    for name, p in PATTERNS.items()
}


def override_family(text: str) -> str | None:
    """The first override family whose pattern matches `text` (after folding disguises), or None."""
    folded = _fold(text)
    return next((family for family, pattern in _COMPILED.items() if pattern.search(folded)), None)


def _fold(text: str) -> str:
    """Fold compatibility forms and drop invisible characters so trivial disguises still match."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


class InstructionOverrideGuard:
    """Blocks messages that try to replace the bot's instructions (competing objectives)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        families: list[str] = Field(default_factory=lambda: list(PATTERNS))
        window: int = Field(default=3, ge=1, description="recent user messages inspected")

    name = "instruction_override"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        unknown = set(config.families) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; known: {sorted(PATTERNS)}")
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        """Block when a recent user message matches an override family."""
        users = [_fold(m.content) for m in turn.messages if m.role == "user"][-self.config.window :]
        text = "\n".join(users)
        newest_starts = len(text) - len(users[-1]) if users else 0
        for family in self.config.families:
            # Only matches reaching into the newest message count: an attack split across turns is caught,
            # but an earlier, already-refused attempt does not poison the customer's next honest question.
            match = next((m for m in _COMPILED[family].finditer(text) if m.end() > newest_starts), None)
            if match:
                return Verdict(
                    self.name,
                    True,
                    0.95,
                    family,
                    f"matched {family}: '{match.group(0)[:60]}'",
                    message=INSTRUCTIONS.say(language(turn)),
                )
        return Verdict(self.name, False, 0.0, "instruction_override", "no override pattern")
