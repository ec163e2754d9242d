"""A Chinese-to-English keyword gloss: lets classifiers trained mostly on English read Chinese requests.

Translation is itself an attack (Wei et al. 2023): a request that would be refused in English is asked in
another language. The gloss appends English keywords for the Chinese words it knows, so the English
evidence the classifier learned applies across the language boundary. Entries are our own.
"""

from __future__ import annotations

import hashlib
import json
import re

_CJK = re.compile(r"[\u4e00-\u9fff]")
READ_CHARS = 4000  # the classifiers read no further (their n-gram preprocessor cuts there): render no further
GLOSS: dict[str, str] = {
    # violence and weapons
    "炸药": "explosive",
    "炸弹": "bomb",
    "爆炸": "explode",
    "爆炸物": "explosives",
    "雷管": "detonator",
    "枪": "gun",
    "枪支": "firearm",
    "手枪": "pistol",
    "子弹": "bullet",
    "弹药": "ammunition",
    "武器": "weapon",
    "刀": "knife",
    "杀": "kill",
    "杀人": "kill person",
    "谋杀": "murder",
    "杀死": "kill",
    "弄死": "kill",
    "打死": "beat to death",
    "伤害": "hurt",
    "袭击": "attack",
    "恐怖": "terror",
    "绑架": "kidnap",
    "毒死": "poison to death",
    "下毒": "poison someone",
    "毒药": "poison",
    "放火": "arson",
    "纵火": "arson",
    "汽油弹": "molotov",
    "报复": "revenge",
    "打人": "beat someone",
    # drugs
    "毒品": "drugs",
    "冰毒": "meth",
    "甲基苯丙胺": "methamphetamine",
    "海洛因": "heroin",
    "可卡因": "cocaine",
    "大麻": "marijuana",
    "摇头丸": "ecstasy",
    "吸毒": "take drugs",
    "贩毒": "drug dealing",
    "制毒": "make drugs",
    "芬太尼": "fentanyl",
    "致幻": "hallucinogen",
    "走私": "smuggle",
    "处方药": "prescription drugs",
    # cybercrime
    "黑客": "hacker",
    "入侵": "hack into",
    "破解": "crack",
    "木马": "trojan",
    "病毒": "virus malware",
    "勒索软件": "ransomware",
    "勒索": "extort ransom",
    "钓鱼": "phishing",
    "盗号": "steal account",
    "密码": "password",
    "漏洞": "vulnerability exploit",
    "攻击": "attack",
    "后门": "backdoor",
    "撞库": "credential stuffing",
    "键盘记录": "keylogger",
    "僵尸网络": "botnet",
    "监控": "monitor spy",
    "偷看": "spy on",
    "摄像头": "camera",
    "远程控制": "remote control",
    # fraud and financial crime
    "诈骗": "scam fraud",
    "骗": "scam cheat",
    "骗钱": "scam money",
    "洗钱": "money laundering",
    "假钞": "counterfeit money",
    "伪造": "forge fake",
    "盗刷": "card fraud",
    "信用卡": "credit card",
    "偷": "steal",
    "盗": "steal",
    "退款": "refund",
    "拒付": "chargeback",
    "发票": "invoice",
    "逃税": "tax evasion",
    "假冒": "impersonate",
    "冒充": "impersonate",
    "传销": "pyramid scheme",
    "套现": "cash out fraud",
    # hate and harassment
    "歧视": "discriminate",
    "种族": "race",
    "骚扰": "harass",
    "辱骂": "insult abuse",
    "威胁": "threaten",
    "恐吓": "intimidate",
    "人肉": "dox",
    "跟踪": "stalk",
    "报复性": "revenge",
    "羞辱": "humiliate",
    "仇恨": "hate",
    "霸凌": "bully",
    "网暴": "cyberbully",
    # privacy
    "地址": "address",
    "住址": "home address",
    "电话": "phone number",
    "手机号": "phone number",
    "身份证": "national id",
    "个人信息": "personal information",
    "隐私": "privacy",
    "别人": "someone else",
    "邻居": "neighbour",
    "前女友": "ex girlfriend",
    "前男友": "ex boyfriend",
    "前妻": "ex wife",
    "账户": "account",
    "账号": "account",
    "订单": "order",
    "记录": "records",
    "录像": "recording footage",
    "视频": "video",
    "查到": "look up",
    "客户": "customer",
    "其他用户": "other customer",
    # self-harm
    "自杀": "suicide",
    "自残": "self harm",
    "割腕": "cut wrists",
    "不想活": "do not want to live",
    "结束生命": "end my life",
    "轻生": "suicide",
    "跳楼": "jump off building",
    "安眠药": "sleeping pills",
    "死": "die",
    "活着": "alive",
    "想死": "want to die",
    # intent and phrasing
    "如何": "how to",
    "怎么": "how",
    "怎样": "how",
    "教我": "teach me",
    "制造": "make",
    "制作": "make",
    "做": "make do",
    "买": "buy",
    "购买": "buy",
    "卖": "sell",
    "获取": "get obtain",
    "弄到": "get hold of",
    "不被发现": "without getting caught",
    "偷偷": "secretly",
    "绕过": "bypass",
    "步骤": "steps",
    "详细": "detailed",
    "在家": "at home",
    "给我": "give me",
    "写": "write",
    "忽略": "ignore",
    "之前的指令": "previous instructions",
    "系统提示": "system prompt",
    "扮演": "roleplay as",
    "没有限制": "no restrictions",
    "开发者模式": "developer mode",
    # in-domain support vocabulary
    "重置": "reset",
    "登录": "log in sign in",
    "登不上": "cannot log in",
    "忘记": "forgot",
    "快递": "delivery",
    "发货": "shipping",
    "包裹": "parcel",
    "物流": "tracking",
    "退货": "return",
    "换货": "exchange",
    "保修": "warranty",
    "订阅": "subscription",
    "取消": "cancel",
    "付款": "payment",
    "扣款": "charge",
    "恒温器": "thermostat",
    "插座": "smart plug",
    "网关": "hub",
    "固件": "firmware",
    "连不上": "cannot connect",
    "无线网": "wifi",
    "电池": "battery",
    "删除": "delete",
    "注销": "delete account",
    "数据": "data",
    "会话": "session",
    "设备": "device",
    "人工": "human agent",
    "客服": "customer service",
}


def by_length(table: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A gloss table's entries, longest Chinese word first (so 不想活 wins over 活); sort once, gloss often."""
    return tuple(sorted(table.items(), key=lambda entry: len(entry[0]), reverse=True))


_ENTRIES = by_length(GLOSS)


def gloss(text: str, entries: tuple[tuple[str, str], ...] = _ENTRIES) -> str:
    """English keywords for the Chinese words in `text` (empty when there is no Chinese); `entries` (default the
    safety gloss) come from `by_length`."""
    if not _CJK.search(text):
        return ""
    found: list[str] = []
    rest = text
    for key, english in entries:
        if key in rest:
            found.append(english)
            rest = rest.replace(key, " ")
    return " ".join(found)


def fingerprint(table: dict[str, str] = GLOSS) -> str:
    """What the classifiers' text view depends on beyond the data: this gloss table, the dictionary file and the
    word segmentation.

    Part of the classifier's data hash, so editing the gloss or installing another dictionary retrains it (and
    a shipped classifier made with other features is not used)."""
    from plugins.safety.cedict import dictionary_file, segmentation

    h = hashlib.sha256(json.dumps(sorted(table.items()), ensure_ascii=False).encode())
    path = dictionary_file()
    h.update(f"{path.name}:{path.stat().st_size}".encode() if path is not None else b"no-dictionary")
    h.update(segmentation().encode())
    return h.hexdigest()[:12]


def with_gloss(text: str) -> str:
    """The text as the classifiers read it: its Chinese rendered word by word in English (CC-CEDICT), followed by
    the hand gloss's English keywords; text without Chinese unchanged."""
    from plugins.safety.cedict import render

    if not _CJK.search(text):
        return text
    text = text[:READ_CHARS]
    g = gloss(text)
    return f"{render(text)}\n[{g}]" if g else render(text)
