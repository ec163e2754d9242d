"""A short, high-precision list of unmistakable requests for serious harm, English and Chinese.

The learned classifier weighs wording it has seen; these patterns make sure the gravest requests are refused
however thin the classifier's evidence (e.g. a short Chinese request). Written by us, kept deliberately narrow.
"""

from __future__ import annotations

import re

_MAKE = r"(make|build|assemble|synthes[iz]e|cook|manufacture|produce|create|prepare)"
SEVERE: list[tuple[str, re.Pattern[str]]] = [
    (
        "violence_weapons",
        re.compile(
            rf"\b{_MAKE}\b.{{0,40}}\b(?<!bath )(pipe ?bomb|bomb|explosives?|detonator|napalm|molotov|nerve agent|sarin|"
            r"ricin|anthrax|dirty bomb|ghost gun|silencer)s?\b(?![-\s]?(proof|shelter|squad|disposal|threat|dog|cyclone))",
            re.IGNORECASE | re.DOTALL,
        ),
    ),
    (
        "drugs",
        re.compile(
            rf"\b{_MAKE}\b.{{0,30}}\b(meth(amphetamine)?|crystal meth|fentanyl|heroin|crack cocaine)\b",
            re.IGNORECASE | re.DOTALL,
        ),
    ),
    (
        "violence_weapons",
        re.compile(r"(制造|制作|自制|做|合成|组装).{0,12}(炸药|炸弹|雷管|爆炸物|毒气|沙林|蓖麻毒素|枪支|手枪)"),
    ),
    ("drugs", re.compile(r"(制造|制作|自制|做|合成|提炼).{0,12}(冰毒|海洛因|芬太尼|摇头丸|毒品|可卡因)")),
    (
        "violence_weapons",
        re.compile(r"(怎么|如何|怎样).{0,10}(杀死|杀掉|弄死|毒死)(一个)?(人|他|她|我(的)?(老婆|老公|邻居|同事))"),
    ),
    (
        "violence_weapons",
        re.compile(
            r"\bhow (do|can|could|would) i\b.{0,20}\b(kill|murder|poison)\b.{0,15}\b(my|a|the)\s+"
            r"(wife|husband|neighbou?r|boss|coworker|child|kid|person|man|woman)\b",
            re.IGNORECASE,
        ),
    ),
]


def severe_match(text: str) -> tuple[str, str] | None:
    """(category, matched text) for the first unmistakable request for serious harm, or None."""
    for category, pattern in SEVERE:
        match = pattern.search(text)
        if match:
            return category, match.group(0)
    return None
