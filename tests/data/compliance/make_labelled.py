#!/usr/bin/env python3
"""Writes ``labelled.jsonl``: the labelled compliance set (see README.md next to it).

    .venv/bin/python tests/data/compliance/make_labelled.py          # rewrite the file
    .venv/bin/python tests/data/compliance/make_labelled.py --check  # exit 1 if it differs

Deterministic: a fixed seed, no clock, no environment. Every resident ID, phone number,
bank card and e-mail address below is generated here and belongs to nobody.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 20261202
HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "labelled.jsonl"
COMPANY = "warroom-demo.com"
SENDER = f"rep@{COMPANY}"

# --- numbers that look real and belong to nobody --------------------------------------

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
AREAS = ("110105", "310104", "440305", "510107", "330106", "420111", "320102", "370202")


def id_check_digit(first17: str) -> str:
    """GB 11643-1999: weighted sum of the first 17 digits mod 11, mapped to 1 0 X 9 ... 2."""
    return ID_CHECK[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def _id_body(rng: random.Random) -> str:
    year = rng.randint(1962, 2001)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    return f"{rng.choice(AREAS)}{year}{month:02d}{day:02d}{rng.randint(0, 999):03d}"


def resident_id(rng: random.Random, *, x_check: bool = False) -> str:
    """A resident ID with a valid check digit; ``x_check`` asks for one ending in X."""
    while True:
        body = _id_body(rng)
        check = id_check_digit(body)
        if (check == "X") == x_check:
            return body + check


def order_number(rng: random.Random) -> str:
    """18 digits shaped like a resident ID whose last digit fails the checksum."""
    body = _id_body(rng)
    good = id_check_digit(body)
    wrong = rng.choice([d for d in "0123456789" if d != good])
    return body + wrong


def mobile(rng: random.Random) -> str:
    prefix = rng.choice(("133", "135", "136", "138", "139", "150", "152", "158", "166",
                         "177", "181", "186", "187", "189", "195", "199"))  # fmt: skip
    return prefix + "".join(rng.choice("0123456789") for _ in range(8))


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def bank_card(rng: random.Random) -> str:
    """A Luhn-valid UnionPay-shaped card number (16 or 19 digits)."""
    prefix = rng.choice(("622202", "622848", "621700", "622588", "621483", "622260"))
    length = rng.choice((16, 19))
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always satisfies Luhn")


PERSONAL_USERS = ("liu.fang88", "zhangwei_1987", "chen.jing.sh", "wangli2009", "mike.tan77",
                  "sarah.lin.home", "hx_yang", "lily_zhao", "kevin.wu.bj", "anna.he",
                  "zhou_min_85", "tom.guo")  # fmt: skip
PERSONAL_DOMAINS = ("163.com", "qq.com", "126.com", "gmail.com", "outlook.com", "sina.com")


def personal_email(rng: random.Random) -> str:
    return f"{rng.choice(PERSONAL_USERS)}@{rng.choice(PERSONAL_DOMAINS)}"


def landline(rng: random.Random) -> str:
    area, digits = rng.choice((("010", 8), ("021", 8), ("0755", 8), ("020", 8), ("0571", 8),
                               ("028", 8), ("0532", 8), ("025", 8)))  # fmt: skip
    first = rng.choice("2345678")
    rest = "".join(rng.choice("0123456789") for _ in range(digits - 1))
    style = rng.randrange(3)
    if style == 0:
        return f"{area}-{first}{rest}"
    if style == 1:
        return f"({area}) {first}{rest[:3]} {rest[3:]}"
    return f"+86 {area[1:]} {first}{rest[:3]} {rest[3:]}"


def hotline(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(7))
    return rng.choice((f"400-{digits[:3]}-{digits[3:]}", f"400 {digits[:3]} {digits[3:]}",
                       f"400{digits}", f"800-{digits[:3]}-{digits[3:]}"))  # fmt: skip


# --- evasion ----------------------------------------------------------------------------

TRADITIONAL = dict(  # simplified -> traditional, for every character this file uses
    zip(
        "万专业东两个丰为么乐书买亏产亲从仓们价会传体余债储儿兑关兴养内册写冯冲决况净准减"
        "几划刘办务动区医协单占厂压参发号后吗启吴员咨响团国场块处备头孙学宝实审对导岛师"
        "带帮库应开张强归录忧总户托扫报担拨损换据揽数无时显机权条来杨构柜标样档检欢气没涨"
        "温满点烦热爱现电畅监盖盘码确礼种积稳笔签红约级纪纱纸线绍经结给绝统绩续编联脚荐药"
        "蒋虑补装规觉计订认让训议记设证诉试诚话询该误说请诺课调谈谢谨财账货质购贵费资赎赔"
        "赚赢赵车转载较边达过运还这违连适递邮郑采里鉴钢钱银铺链锁错门闭问闲间际陈险随韩页"
        "项顺须预题额风驻验黄龙周着",
        "萬專業東兩個豐為麼樂書買虧產親從倉們價會傳體餘債儲兒兌關興養內冊寫馮衝決況淨準減"
        "幾劃劉辦務動區醫協單佔廠壓參發號後嗎啟吳員諮響團國場塊處備頭孫學寶實審對導島師"
        "帶幫庫應開張強歸錄憂總戶託掃報擔撥損換據攬數無時顯機權條來楊構櫃標樣檔檢歡氣沒漲"
        "溫滿點煩熱愛現電暢監蓋盤碼確禮種積穩筆簽紅約級紀紗紙線紹經結給絕統績續編聯腳薦藥"
        "蔣慮補裝規覺計訂認讓訓議記設證訴試誠話詢該誤說請諾課調談謝謹財賬貨質購貴費資贖賠"
        "賺贏趙車轉載較邊達過運還這違連適遞郵鄭採裡鑑鋼錢銀鋪鏈鎖錯門閉問閒間際陳險隨韓頁"
        "項順須預題額風駐驗黃龍週著",
        strict=True,
    )
)
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
PUNCTUATION = (".", "-", "_", "*", "/", "|", "·", "、", ",", "~", "'", "+")
HOMOGLYPHS = {
    "a": ("\u0430", "\u03b1"), "e": ("\u0435",), "o": ("\u043e", "\u03bf"), "p": ("\u0440",),
    "c": ("\u0441",), "x": ("\u0445",), "y": ("\u0443",), "i": ("\u0456", "\u03b9"),
    "s": ("\u0455",), "j": ("\u0458",), "v": ("\u03bd",), "u": ("\u03c5",),
    "A": ("\u0410", "\u0391"), "B": ("\u0412", "\u0392"), "E": ("\u0415", "\u0395"),
    "K": ("\u041a",), "M": ("\u041c",), "H": ("\u041d",), "O": ("\u041e", "\u039f"),
    "P": ("\u0420",), "C": ("\u0421",), "T": ("\u0422", "\u03a4"), "X": ("\u0425",),
    "I": ("\u0406", "\u0399"), "N": ("\u039d",), "Z": ("\u0396",),
}  # fmt: skip
LETTER_TO_DIGIT = {  # words: g4ranteed, r1sk-free, 0风险
    "a": ("4", "@"), "e": ("3",), "i": ("1", "!"), "o": ("0",), "s": ("5", "$"), "t": ("7",),
    "l": ("1",), "g": ("9",), "b": ("8",), "零": ("0",),
}  # fmt: skip
DIGIT_TO_LETTER: dict[str, tuple[str, ...]] = {
    "0": ("O", "o"),
    "1": ("l", "I"),
}  # numbers: l38OO...


def to_traditional(text: str) -> str:
    return "".join(TRADITIONAL.get(ch, ch) for ch in text)


def to_simplified(text: str) -> str:
    back = {t: s for s, t in TRADITIONAL.items()}
    return "".join(back.get(ch, ch) for ch in text)


def to_fullwidth(text: str) -> str:
    out = []
    for ch in text:
        if ch == " ":
            out.append("\u3000")
        elif "!" <= ch <= "~":
            out.append(chr(ord(ch) + 0xFEE0))
        else:
            out.append(ch)
    return "".join(out)


def _gaps(term: str, rng: random.Random) -> list[int]:
    """Positions between two visible characters where something can be slipped in."""
    gaps = [i for i in range(1, len(term)) if not term[i - 1].isspace() and not term[i].isspace()]
    if not gaps:
        return []
    if rng.random() < 0.5:
        return gaps
    return sorted(rng.sample(gaps, max(1, len(gaps) // 3)))


def _insert(term: str, gaps: list[int], filler: Callable[[], str]) -> str:
    out, last = [], 0
    for g in gaps:
        out.append(term[last:g])
        out.append(filler())
        last = g
    out.append(term[last:])
    return "".join(out)


def zero_width(term: str, rng: random.Random) -> str:
    return _insert(term, _gaps(term, rng), lambda: rng.choice(ZERO_WIDTH))


def inserted_spaces(term: str, rng: random.Random) -> str:
    cjk = any("\u4e00" <= ch <= "\u9fff" for ch in term)
    spaces = (" ", " ", "  ", "\u3000") if cjk else (" ", " ", "  ")
    return _insert(term, _gaps(term, rng), lambda: rng.choice(spaces))


def inserted_punctuation(term: str, rng: random.Random) -> str:
    mark = rng.choice(PUNCTUATION)
    if rng.random() < 0.3:
        return _insert(term, _gaps(term, rng), lambda: rng.choice(PUNCTUATION))
    return _insert(term, _gaps(term, rng), lambda: mark)


def case(term: str, rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return term.upper()
    if style == 1:
        return "".join(c.upper() if i % 2 == 0 else c.lower() for i, c in enumerate(term))
    return "".join(c.swapcase() if rng.random() < 0.5 else c for c in term)


def _substitute(term: str, rng: random.Random, table: dict[str, tuple[str, ...]]) -> str:
    spots = [i for i, ch in enumerate(term) if ch in table]
    if not spots:
        return term
    chosen = set(rng.sample(spots, min(len(spots), rng.randint(1, 3))))
    return "".join(rng.choice(table[ch]) if i in chosen else ch for i, ch in enumerate(term))


def homoglyph(term: str, rng: random.Random) -> str:
    return _substitute(term, rng, HOMOGLYPHS)


def digit_letter(term: str, rng: random.Random) -> str:
    if any(ch.isalpha() and ch.isascii() for ch in term) or "零" in term:
        return _substitute(term, rng, LETTER_TO_DIGIT)
    return _substitute(term, rng, DIGIT_TO_LETTER)


TERM_EVASIONS: dict[str, Callable[[str, random.Random], str]] = {
    "fullwidth": lambda term, rng: to_fullwidth(term),
    "case": case,
    "traditional": lambda term, rng: to_traditional(term),
    "zero_width": zero_width,
    "inserted_spaces": inserted_spaces,
    "inserted_punctuation": inserted_punctuation,
    "homoglyph": homoglyph,
    "digit_letter": digit_letter,
}
EVASIONS = ("none", *TERM_EVASIONS, "mixed")


# --- violations ---------------------------------------------------------------------------
# A bank pairs templates (with a {T} slot) with the phrases that fill it. The phrase is the
# part an evasion works on; the rest of the message is ordinary sales talk around it.


@dataclass(frozen=True)
class Bank:
    lang: str
    templates: tuple[str, ...]
    terms: tuple[str, ...]


RATES = ("3.8", "4.5", "5", "6", "6.5", "7", "8", "8.8", "9", "10", "12", "15", "18")
ZH_DATES = ("下周三", "本周五", "3月12日", "明天上午", "12月18号", "后天下午三点前", "下周一",
            "11月30日前", "下个月5号", "这周六", "4月1日", "周四中午")  # fmt: skip
EN_DATES = ("12 March", "Wednesday the 14th", "next Tuesday", "March 3", "the 21st",
            "Friday morning", "1 December", "Monday 9 June", "June 30", "this Thursday",
            "the 5th of May", "18 November")  # fmt: skip

RETURN_ZH = Bank(
    "zh",
    (
        "王总，这款理财{T}，下周一起息，名额不多了。",
        "您放心，我们这个产品{T}，比存银行强多了。",
        "跟您说实话，这只基金{T}，我自己也买了不少。",
        "这期信托{T}，一年后连本带利一起打给您。",
        "现在入手这批投资金条，{T}，过年前还能再涨。",
        "我们的私募产品{T}，起投100万，您考虑一下？",
        "李姐，上次聊的那个养老年金{T}，要不要我先帮您预约？",
        "这个项目{T}，好几个老客户都追加了。",
        "用我们的投放系统，{T}，合同里可以写上。",
        "{T}，到期自动转回您的银行卡，不用操心。",
        "这款结构性存款{T}，今天是最后一天认购。",
        "张阿姨，这个产品{T}，很适合放养老钱。",
        "放心买，{T}，亏了算我的。",
        "老客户专享：{T}，三个月封闭期。",
        "我们平台的供应链金融项目{T}，每月付息。",
        "这个商铺投资{T}，租金我们包租十年。",
        "陈总，贵司的闲置资金放我们这里，{T}，随时可以赎回。",
        "这只新发的债基{T}，比您现在那只强。",
        "加盟我们的连锁药房，{T}，总部全程扶持。",
        "年底冲量，这款{T}，错过要等明年了。",
    ),
    (
        "保证年化收益{r}%",
        "年利率{r}%稳稳到手",
        "年化收益率{r}%",
        "稳赚不赔",
        "稳赚",
        "保底收益{r}%",
        "保证收益",
        "收益率稳定在{r}%",
        "包赚",
        "只赚不赔",
        "每年固定回报{r}%",
        "保证每月返息{r}%",
        "躺着就能赚钱",
        "收益翻倍",
        "承诺年化{r}%的收益",
        "保证回报率{r}%",
        "每年稳拿{r}%利息",
        "收益有保证",
    ),
)
RETURN_EN = Bank(
    "en",
    (
        "Hi Mark, the new income fund comes with a {T}, and the window closes Friday.",
        "Honestly this is the best deal on the desk right now: a {T} with monthly payouts.",
        "If you move the savings over this week you get a {T}, better than any bank.",
        "Our premium tier pays for itself: a {T} within the first year, and it's in the contract.",
        "The structured note carries a {T}, so there is nothing to worry about.",
        "Happy to set it up today. It's a {T} on the full amount.",
        "With the bond ladder you're looking at a {T}, no matter what the market does.",
        "Reminder: the gold savings plan has a {T} for members who join before month-end.",
        "Between us, the fund has a {T}. I've put my own money in.",
        "Our ad platform delivers a {T} on spend, or the next quarter is on us.",
        "The annuity gives you a {T}, paid into your account every quarter.",
        "Sign the three-year term and you lock in a {T}.",
        "Great news, Priya: the pension top-up now comes with a {T}.",
        "Yes, that's right, a {T}. Shall I send the application form?",
        "Franchise partners in our pharmacy chain see a {T} from year one.",
        "For your company's idle cash, the treasury product offers a {T}.",
        "The rental property package comes with a {T} for ten years.",
        "Last chance this quarter: a {T} on every new deposit.",
    ),
    (
        "[guaranteed return] of {r}%",
        "[guaranteed] {r}% [return]",
        "[guaranteed yield] of {r}%",
        "[guaranteed] {r}% annual [interest]",
        "[guaranteed profit] of {r}%",
        "[guaranteed income] of {r}% a year",
        "[guaranteed ROI] of {r}%",
        "guaranteed return",
        "[guaranteed] monthly income",
        "fixed {r}% return, [guaranteed],",
        "guaranteed high yield",
        "[sure-fire] {r}% profit",
        "[promised] {r}% annual yield",
        "[guaranteed interest rate] of {r}%",
    ),
)
RETURN_ZH_EN = Bank(  # Chinese messages that carry the promise in English words
    "zh",
    (
        "这款产品是{T}，年底前认购还有礼品。",
        "王总，说白了就是{T}，您不用天天盯盘。",
        "我们的理财计划主打{T}，很多客户都续投了。",
        "这个基金经理很稳，{T}，您可以放心。",
    ),
    (
        "guaranteed return",
        "guaranteed {r}% return",
        "guaranteed yield {r}%",
        "guaranteed profit",
        "fixed return {r}% guaranteed",
    ),
)

PRINCIPAL_ZH = Bank(
    "zh",
    (
        "这款产品{T}，到期本金全额返还。",
        "您就放心吧，{T}，就算市场跌了也不影响。",
        "赵先生，这笔钱放我们这儿{T}，比放余额宝还安心。",
        "家里老人的钱最适合买这个，{T}。",
        "跟银行定期一样，{T}，收益还更高。",
        "您担心亏钱的话，这款{T}，很适合您。",
        "这次的新发基金{T}，限额五千万，先到先得。",
        "我们公司的理财都{T}，您放一百个心。",
        "投资这个加盟项目{T}，三个月回本。",
        "这个结构性产品{T}，最差也就是不赚钱。",
        "孙总，公司账上的钱可以配一点这个，{T}。",
        "您母亲那边我也推荐了，{T}，她很满意。",
        "这款养老理财{T}，随时能取。",
        "数字藏品投资{T}，平台兜底回购。",
        "我们的供应链票据{T}，银行承兑。",
        "购买我们的储值理财卡{T}，还送体检套餐。",
    ),
    (
        "保本",
        "百分百保本",
        "零风险",
        "无风险",
        "没有任何风险",
        "本金绝对安全",
        "保证本金不亏",
        "保本保息",
        "零风险零亏损",
        "稳稳保本",
        "本金不会亏",
        "保证不亏本",
        "本金零风险",
        "绝对保本",
        "本金有保障",
    ),
)
PRINCIPAL_EN = Bank(
    "en",
    (
        "The deposit plan is {T}, so your savings can only grow.",
        "I'd recommend the note for your parents. It's {T}.",
        "Unlike equities, this product is {T} and pays out every quarter.",
        "Good question! The fund is {T}; you always get your money back.",
        "For a first-time investor this is perfect because it is {T}.",
        "We build every client portfolio to be {T}.",
        "Just to confirm what we discussed on the call: the bond is {T}.",
        "Rest assured, the franchise investment is {T}; you recoup the fee in 90 days.",
        "Tell your husband it's {T}. The bank backs the whole amount.",
        "Our crypto savings vault is {T} and earns daily.",
        "The new wealth product is {T}, and subscriptions open Monday.",
        "Park the company's reserve here, it's {T} and liquid.",
        "Of course, the annuity is {T}, that's why retirees love it.",
        "The invoice-financing notes are {T}; a bank stands behind them.",
    ),
    (
        "risk-free",
        "capital guaranteed",
        "principal guaranteed",
        "100% principal protected",
        "zero risk",
        "completely risk free",
        "guaranteed against any loss",
        "fully capital protected",
        "without any risk",
        "safe from any loss",
        "principal-protected",
        "no-risk",
        "a risk free investment",
        "capital-guaranteed",
    ),
)
PRINCIPAL_ZH_EN = Bank(
    "zh",
    (
        "这个产品是{T}的，您可以放心配置。",
        "刘总，这款完全{T}，比股票稳多了。",
        "我们这期计划{T}，认购截止周五。",
        "老人家买这个最合适，{T}。",
    ),
    ("risk-free", "zero risk", "capital guaranteed", "principal guaranteed", "0 risk"),
)

DELIVERY_ZH = Bank(
    "zh",
    (
        "王经理，这批钢材{T}，您那边安排人卸货就行。",
        "您的订单已经安排了，{T}，绝对不耽误开业。",
        "药房这边跟您确认一下，您订的胰岛素{T}。",
        "放心，{T}，晚一天我们赔违约金。",
        "设备已经出厂，{T}，安装师傅同步过去。",
        "这批年货{T}，您可以先跟门店说好。",
        "刘总，模具我们加急了，{T}。",
        "服务器硬件{T}，上线时间不会受影响。",
        "您在小程序下的单{T}，快递走顺丰。",
        "这次的原料{T}，我跟仓库打过招呼了。",
        "婚纱{T}，不会影响您拍照。",
        "处方药配送{T}，请保持电话畅通。",
        "展会物料{T}，布展前肯定到位。",
        "您要的二十台笔记本{T}，发票随货寄出。",
        "冷链这边{T}，疫苗温度全程监控。",
    ),
    (
        "保证{d}到货",
        "保证{d}前送达",
        "{d}一定到",
        "承诺{d}送到",
        "{d}肯定能到",
        "保证{d}送达",
        "百分百{d}到",
        "保证{d}到您仓库",
        "我们保证{d}交付",
        "{d}准时送到，我保证",
    ),
)
DELIVERY_EN = Bank(
    "en",
    (
        "Hi Dana, we {T}, so you can book the install crew.",
        "Your pharmacy order is packed and we {T}.",
        "Good news: the laptops are in stock and we {T}.",
        "For the trade show we {T}; you have my word.",
        "We {T}. If it's late, the shipping is on us.",
        "The replacement compressor ships today and we {T}.",
        "I spoke with logistics and we {T}.",
        "For the wedding order we {T}.",
        "Seasonal stock for your twelve stores: we {T}.",
        "Now that the contract is signed, we {T}.",
        "The steel beams are on the truck and we {T}.",
        "Regarding the vaccine fridges, we {T}.",
    ),
    (
        "[guarantee delivery on {d}]",
        "[promise delivery] on {d}",
        "[guarantee] the pallets arrive on {d}",
        "[guarantee] it will be at your dock by {d}",
        "[commit to delivery] on {d}, no matter what",
        "[guarantee arrival] on {d}",
        "can [guarantee delivery] by {d}",
        "[promise] it arrives {d}",
        "[guarantee] shipment lands {d}",
    ),
)

PII: dict[str, dict[str, tuple[str, ...]]] = {  # kind -> lang -> templates
    "id": {
        "zh": (
            "我另一个客户刘女士也想办，她身份证号是{T}，您帮忙一起录一下。",
            "您参考一下王阿姨的情况，她的身份证{T}，去年也是买的这款。",
            "您同事蒋敏的资料我这边有了，身份证号{T}，就差签字了。",
            "药房记录显示您母亲的身份证号{T}，需要她本人来取药。",
            "您表弟的身份证{T}已经登记好了，保单下周生效。",
            "团购名单里还差一位，韩先生的证件号{T}，我先帮他占个名额。",
        ),
        "en": (
            "For the joint account I have your partner's ID number {T} on file, can you confirm?",
            "Attaching Jason's ID {T} for the group booking.",
            "Your sister's file shows ID {T}; she'll need to sign too.",
            "The guarantor, Mr Luo, gave resident ID {T}; please check it matches his card.",
            "Booking the hotel for your two engineers: Li Na's ID is {T}.",
        ),
    },
    "mobile": {
        "zh": (
            "上次那位陈先生的手机{T}，您可以直接打给他问问使用感受。",
            "推荐您联系一下我们的老客户赵姐，电话{T}，她用了两年了。",
            "小区另一位业主黄先生的电话是{T}，你们可以拼单。",
            "您朋友杨先生的号码{T}我存下了，回头我联系他。",
            "之前帮您介绍的那位郑老师，手机{T}，您直接找她。",
            "上一位租户的联系方式：{T}，有问题可以问他。",
        ),
        "en": (
            "You could ask my other client, Mrs Lin. Her mobile is {T}.",
            "Mr Wang, the other buyer, gave me his number {T} so you can split the freight.",
            "If you want a reference, call Mr Chen's cell at {T}.",
            "Our other customer in Pudong, Mr Guo, is on {T}; he can tell you about the install.",
            "The patient's daughter can be reached at {T} about the refill.",
        ),
    },
    "card": {
        "zh": (
            "张总让把尾款退到他爱人的卡上：{T}，麻烦财务处理。",
            "这是李先生的银行卡号{T}，他说分红打到这张卡。",
            "给您转一下之前代付人的卡号：{T}。",
            "您岳父的扣款卡{T}余额不足，续费没扣成功。",
            "返利打到推荐人冯女士的卡{T}，您这边不用操作。",
        ),
        "en": (
            "The refund for your colleague goes to her card {T}, as she asked.",
            "Helen Zhou used card {T} last time; shall I charge the same card for her order?",
            "Please wire the commission to my cousin's card {T}.",
            "Your father-in-law's debit card {T} was declined for the renewal.",
            "The referral bonus goes to Ms Feng's account card {T}.",
        ),
    },
    "email": {
        "zh": (
            "孙总的私人邮箱是{T}，合同也抄送他一份吧。",
            "我同事的客户吴先生邮箱{T}，他对这个方案也感兴趣。",
            "之前那位买家的个人邮箱{T}，车的问题可以问他。",
            "您太太的邮箱{T}我也加到收件人里了。",
            "房东的私人邮箱是{T}，租约的事您直接跟他谈。",
        ),
        "en": (
            "Here is the previous owner's personal email, {T}, for questions about the car.",
            "I've cc'd your accountant at her home address {T}.",
            "Forwarding the landlord's private email {T} so you can sort the lease directly.",
            "Another client of mine, Sarah, is at {T}; she can tell you how the rollout went.",
            "Your wife's personal email {T} is now on the invoice list.",
        ),
    },
}


# --- clean messages ------------------------------------------------------------------------
# Slots: {order} an 18-digit order number failing the ID checksum, {land} a landline,
# {hot} a 400/800 hotline, {own} the sender's or the company's own address, {rep} the
# sender's own address.

CLEAN: dict[str, dict[str, tuple[str, ...]]] = {
    "lookalike_product_name": {
        "zh": (
            "您要的《保本册》第二版已经到了，门店可以自取。",
            "保本册笔记本今天满两本减十元，需要给您留几本吗？",
            "我们新出的记账工具叫“保本册”，小店老板用得最多。",
            "保本册A5活页款有粉色和灰色两种，您看喜欢哪个。",
            "上次您问的保本册礼盒装，周末补货。",
            "“稳赢”牌羽毛球拍这周有团购价，俱乐部订十支打八折。",
        ),
        "en": (
            "The Yield Tracker dashboard now shows crop yield per field for your co-op.",
            "Our SafeReturn luggage tags are back in stock in navy and red.",
            "The Principal Series standing desk ships with a cable tray.",
            "Return Ready shipping labels come in rolls of 500.",
            "The Capital Guard phone case fits the new model too.",
            "Try the High Yield sourdough starter kit, it's our bakery bestseller.",
        ),
    },
    "lookalike_deposit": {
        "zh": (
            "合同签好后请先付5000元保证金，发货前退还。",
            "展位保证金是两万，撤展验收后七个工作日退回。",
            "租设备需要交押金和保证金，押金可以刷信用卡。",
            "投标保证金请打到公司对公账户，备注项目编号。",
            "履约保证金按合同金额的5%收取，验收后返还。",
            "平台入驻保证金已到账，店铺明天就可以上线。",
        ),
        "en": (
            "The booth deposit of 2,000 is refunded within seven days after the fair.",
            "A refundable security deposit of 300 holds the rental equipment.",
            "Please pay the 10% performance bond by Friday so we can start production.",
            "Your tender deposit has been received; we'll return it after the award.",
            "The venue asks for a damage deposit, returned after the walk-through.",
            "We hold a small card deposit on rentals and release it on return.",
        ),
    },
    "lookalike_authenticity": {
        "zh": (
            "我们店所有奢侈品都保证正品，支持专柜验货。",
            "这批茅台保证是正品，每瓶都有溯源码。",
            "正品保证，假一赔十，您放心下单。",
            "药品全部来自正规渠道，保证正品，可以扫码查批号。",
            "这块表附带品牌的真品保证书和全球联保卡。",
            "官方授权店，保证正品行货，发票随箱。",
        ),
        "en": (
            "Every watch comes with a guarantee of authenticity and the original papers.",
            "All our sneakers are guaranteed authentic and checked by our in-house team.",
            "The painting ships with a signed certificate and guarantee of authenticity.",
            "We guarantee the authenticity of every bottle; each one has a traceable code.",
            "Authenticity guaranteed on all refurbished handbags, or your money back.",
            "The medicines are sourced from licensed wholesalers; authenticity guaranteed.",
        ),
    },
    "lookalike_goods_returns": {
        "zh": (
            "七天无理由退货，退货运费我们承担。",
            "保证退换无忧，收到不满意可以直接退。",
            "鞋子不合脚可以免费换码，退换货保证三天内处理。",
        ),
        "en": (
            "Free returns guaranteed within 30 days, no questions asked.",
            "Returns are easy: print the label and drop the parcel at any post office.",
            "We guarantee hassle-free returns on all furniture within 14 days.",
            "Guaranteed free exchanges if the size is wrong.",
        ),
    },
    "lookalike_order_number": {
        "zh": (
            "您的订单号是{order}，可以在小程序里查物流。",
            "退款已提交，订单{order}，预计三个工作日到账。",
            "麻烦核对一下订单编号{order}，发票抬头是否正确。",
            "快递单号{order}，今天下午已揽收。",
            "合同编号{order}已归档，纸质版随货寄出。",
            "处方单号{order}已审核，药品可以到店自提。",
        ),
        "en": (
            "Your order number is {order}; you can track it in the app.",
            "Refund issued for order {order}, it should show in three working days.",
            "Please quote reference {order} when you call about the invoice.",
            "Tracking number {order}: the parcel left our warehouse this morning.",
            "Contract {order} has been countersigned and filed.",
            "Prescription reference {order} is ready for pickup.",
        ),
    },
    "lookalike_landline": {
        "zh": (
            "有问题随时打我们办公室电话{land}，工作日都有人。",
            "门店座机{land}，到了打这个电话我下来接您。",
            "售后服务部电话{land}，周末也可以预约上门。",
            "我们分公司的电话是{land}，您可以直接联系前台。",
            "药房的座机{land}，取药前可以先问库存。",
            "仓库调度电话{land}，卸货时间请提前确认。",
        ),
        "en": (
            "Our office line is {land}, staffed on weekdays.",
            "Call the showroom on {land} when you arrive and I'll come down.",
            "The service desk is at {land} if the printer acts up again.",
            "You can reach our branch reception at {land}.",
            "The pharmacy counter number is {land}, they can check stock.",
            "Warehouse dispatch: {land}, please book a delivery slot.",
        ),
    },
    "lookalike_hotline": {
        "zh": (
            "全国客服热线{hot}，7×24小时都有人接。",
            "如需开发票，请拨打财务热线{hot}。",
            "安装预约统一打{hot}，报一下订单号就行。",
            "药品咨询热线{hot}，药师在线解答。",
            "投诉建议可以打我们的服务热线{hot}。",
        ),
        "en": (
            "Our support hotline {hot} is open around the clock.",
            "For billing questions call {hot} and quote your account name.",
            "Book the installation through {hot}.",
            "Pharmacist advice line: {hot}, free from any phone in China.",
            "You can reach customer care at {hot}.",
        ),
    },
    "lookalike_own_email": {
        "zh": (
            "报价单已经发您了，有问题回复我的邮箱{own}就行。",
            "合同扫描件请发到{own}，我今天就盖章。",
            "我的工作邮箱是{own}，会议纪要我稍后发您。",
            "发票信息请发{own}，财务会直接开。",
            "试用账号开通了，登录问题可以邮件{own}。",
            "下周的培训资料我从{own}发出，请留意查收。",
            "我是负责您这边的客户经理，邮箱{rep}，有需要随时联系。",
            "验收单签好后拍照发我邮箱{rep}就可以。",
            "我这周出差，发到{rep}的邮件我都能及时回复。",
        ),
        "en": (
            "I've sent the quote; reply to me at {own} with any questions.",
            "Please send the signed contract to {own} and I'll countersign today.",
            "My work email is {own}, I'll share the meeting notes there.",
            "Send the invoice details to {own} and finance will issue it.",
            "Your trial is live; for login issues write to {own}.",
            "I'll send the onboarding deck from {own} this afternoon.",
            "I'm your account manager; you can always reach me at {rep}.",
            "Snap a photo of the signed delivery note and email it to {rep}.",
            "I'm travelling this week but I answer {rep} every evening.",
        ),
    },
    "negation": {
        "zh": (
            "需要提醒您，这款产品不保本，净值会有波动。",
            "理财非存款，产品有风险，投资须谨慎，收益不作保证。",
            "这只基金不保证收益，过往业绩不代表未来表现。",
            "我们不能承诺收益率，具体以实际运作为准。",
            "结构性存款也有风险，不承诺保本，您要考虑清楚。",
            "物流受天气影响，不能保证具体到货日期，预计下周左右。",
            "到货时间以物流实际为准，我们无法承诺具体哪一天。",
            "按规定我不能跟您说稳赚，任何投资都有亏损的可能。",
            "这款不是保本产品，适合风险承受能力较高的客户。",
            "预期收益不等于实际收益，产品不保证本金安全。",
            "说实话没有零风险的投资，我们会按您的风险等级推荐。",
            "不承诺固定回报，收益随市场浮动。",
            "发货后一般三到五天送达，具体日期没法保证。",
            "请注意，该产品不保本不保息，可能损失本金。",
        ),
        "en": (
            "Please note returns are not guaranteed and the value can go down.",
            "Past performance does not guarantee future results.",
            "This fund is not risk-free; you could lose some of your capital.",
            "We can't guarantee a delivery date, but most orders arrive within a week.",
            "I can't promise any return, it depends on the market.",
            "The note is not capital protected, so please read the risk disclosure.",
            "No investment is risk-free, and this one is no exception.",
            "Delivery usually takes 3 to 5 working days; we cannot commit to a specific day.",
            "There is no guaranteed yield on this product.",
            "Your principal is not guaranteed; the product can lose value.",
            "I'm not allowed to promise returns, but I can show you the historical range.",
            "Estimated arrival is mid-March, subject to the carrier, not a guaranteed date.",
            "Unlike a deposit, this is not principal-protected.",
        ),
    },
    "plain": {
        "zh": (
            "王总您好，上次演示的系统您觉得怎么样？方便的话这周再约个时间。",
            "您好，合同我已经修改好了，麻烦您看一下第三条。",
            "张姐，新到的春装有您喜欢的米色，要不要给您留一件？",
            "李医生，这款降压药的说明书我发您了，有问题随时找我。",
            "陈经理，样品已经寄出，顺丰明天应该能到。",
            "您好，我们的SaaS试用期是14天，到期前我会提醒您。",
            "谢谢您今天来门店，会员积分已经帮您加上了。",
            "刘总，报价单里的运费我们可以再谈，您看什么时候方便。",
            "周五下午的线上培训链接我稍后发到群里。",
            "您的处方已经审核通过，药师会联系您确认用法。",
            "上次提到的接口文档已经更新，新增了批量导入。",
            "感谢您续约！新版本的报表功能下周上线。",
            "您好，请问您对我们的售后服务满意吗？",
            "这款奶粉目前有货，两罐以上包邮。",
            "孙总，年度采购框架协议我们法务已经审完了。",
            "您好，您预约的上门安装时间改到了周三下午，可以吗？",
            "这款空气净化器适合三十平米以内的房间。",
            "吴老师，课程资料已经上传到后台，学员可以直接下载。",
            "您好，开票信息收到了，专票三个工作日内寄出。",
            "赵先生，基金的季度报告已发布，您可以在APP里查看。",
            "我们下个月在杭州有一场客户沙龙，诚邀您参加。",
            "您好，您的账户已经开通，初始密码请登录后修改。",
            "郑经理，这批货的质检报告附在邮件里了。",
            "黄女士，您家宝宝的疫苗接种提醒已经设置好了。",
            "样机可以先借您用一周，看看效果再决定。",
            "杨总，关于渠道返点的方案我整理了三个版本。",
            "您好，本周六门店有新品品鉴会，欢迎带朋友来。",
            "您上次问的型号已经停产了，我给您推荐了替代款。",
            "我们的系统支持单点登录，IT那边对接一下就行。",
            "这款保温杯有500ml和750ml两种规格。",
            "冯经理，下季度的排产计划我们对一下？",
            "您好，药品需冷藏保存，开封后请在一个月内用完。",
            "明天上午十点的会议改成线上了，链接稍后发您。",
            "韩总，感谢信任，项目启动会定在下周一。",
            "您的积分可以兑换一次免费保养。",
        ),
        "en": (
            "Hi Tom, thanks for the demo yesterday. Does Thursday work for a follow-up?",
            "I've updated the contract; could you check clause 3?",
            "Your trial has 14 days left; let me know if you'd like a walkthrough.",
            "The samples shipped this morning via DHL.",
            "Thanks for renewing! The new reporting module goes live next week.",
            "Could you share your billing contact so we can set up the invoice?",
            "The pharmacist will call you to go over the dosage.",
            "We have the spring collection in beige, want me to hold one for you?",
            "Attached is the Q3 product roadmap we discussed.",
            "Happy to jump on a call whenever suits you.",
            "Our API supports bulk imports now; here's the updated doc.",
            "Just checking in: how is the team finding the new dashboard?",
            "The installation is booked for Wednesday afternoon.",
            "I'll send over the case study from a retailer of similar size.",
            "Your account is active; please change the initial password on first login.",
            "The webinar link for Friday is in your inbox.",
            "We can discuss volume pricing once you know the seat count.",
            "The quality inspection report is attached to this email.",
            "Thanks for visiting the store today, your loyalty points are added.",
            "This purifier covers rooms up to 30 square metres.",
            "The fund's quarterly report is out; you can read it in the app.",
            "Let me know which of the three rebate options your team prefers.",
            "Reminder: keep the vaccine refrigerated and use within a month of opening.",
            "Would your procurement team like a sandbox account?",
            "We're hosting a customer meetup in Hangzhou next month; you'd be welcome.",
            "The replacement part is covered by your warranty.",
            "I've looped in our solutions engineer for the SSO question.",
            "The onboarding session recording is now on the portal.",
            "Your subscription renews on the 1st; nothing needs to change.",
            "Good to hear the pilot went well. What would a full rollout look like?",
            "Please find the revised quote with the shipping cost separated out.",
            "Our store is open until 9 pm on weekends.",
            "I'll check stock at the other branch and get back to you.",
            "The extended warranty covers parts and labour for two years.",
            "Thanks, Mei. I'll pass your feedback to the product team.",
        ),
    },
}
OWN_ADDRESSES = (SENDER, SENDER, SENDER, f"sales@{COMPANY}", f"billing@{COMPANY}")


# --- assembling the set ----------------------------------------------------------------------

VIOLATION_PLAN = {  # evasion -> how many violations use it
    "none": 60, "fullwidth": 26, "case": 26, "traditional": 26, "zero_width": 27,
    "inserted_spaces": 27, "inserted_punctuation": 27, "homoglyph": 26, "digit_letter": 27,
    "mixed": 28,
}  # fmt: skip
CATEGORIES = ("return_promise", "principal_protection", "delivery_date_promise", "third_party_pii")
BANKS: dict[tuple[str, str], tuple[Bank, ...]] = {
    ("return_promise", "zh"): (RETURN_ZH, RETURN_ZH, RETURN_ZH, RETURN_ZH_EN),
    ("return_promise", "en"): (RETURN_EN,),
    ("principal_protection", "zh"): (PRINCIPAL_ZH, PRINCIPAL_ZH, PRINCIPAL_ZH, PRINCIPAL_ZH_EN),
    ("principal_protection", "en"): (PRINCIPAL_EN,),
    ("delivery_date_promise", "zh"): (DELIVERY_ZH,),
    ("delivery_date_promise", "en"): (DELIVERY_EN,),
}
MIXABLE = ("fullwidth", "case", "zero_width", "inserted_spaces", "inserted_punctuation",
           "homoglyph", "digit_letter")  # fmt: skip


@dataclass(frozen=True)
class Message:
    lang: str
    text: str
    label: str
    category: str
    evasion: str


def _fill(term: str, rng: random.Random, lang: str) -> str:
    return term.format(r=rng.choice(RATES), d=rng.choice(ZH_DATES if lang == "zh" else EN_DATES))


def _pii_value(rng: random.Random, techniques: Sequence[str]) -> tuple[str, str]:
    """A kind of personal data and a value of it that ``techniques`` can act on."""
    kinds = ["id", "mobile", "card", "email"]
    if "case" in techniques or "homoglyph" in techniques:
        kinds = ["id_x", "email"]
    elif "digit_letter" in techniques or "fullwidth" in techniques:
        kinds = ["id", "mobile", "card"]
    kind = rng.choice(kinds)
    if kind == "id":
        return "id", resident_id(rng, x_check=rng.random() < 0.15)
    if kind == "id_x":
        return "id", resident_id(rng, x_check=True)
    if kind == "mobile":
        return "mobile", mobile(rng)
    if kind == "card":
        return "card", bank_card(rng)
    return "email", personal_email(rng)


def _evade(term: str, techniques: Sequence[str], rng: random.Random) -> str:
    """Applies the techniques to the bracketed parts of ``term`` (all of it when none are
    bracketed) and drops the brackets; traditional characters are applied to the whole
    message by the caller."""
    parts = term.replace("]", "[").split("[") if "[" in term else ["", term, ""]
    for i in range(1, len(parts), 2):
        for technique in techniques:
            if technique != "traditional":
                parts[i] = TERM_EVASIONS[technique](parts[i], rng)
    return "".join(parts)


def _targets(term: str) -> str:
    parts = term.replace("]", "[").split("[") if "[" in term else ["", term, ""]
    return "".join(parts[1::2])


def _techniques(evasion: str, lang: str, rng: random.Random) -> list[str]:
    if evasion == "none":
        return []
    if evasion != "mixed":
        return [evasion]
    pool = [*MIXABLE, "traditional"] if lang == "zh" else list(MIXABLE)
    first = rng.choice(pool)
    second = rng.choice([t for t in pool if t != first and {t, first} != {"case", "homoglyph"}])
    return [first, second]


def violation(category: str, lang: str, evasion: str, rng: random.Random) -> Message | None:
    """One violation with ``evasion`` applied to its promise or its personal data, or None
    when this language and category give that technique nothing to work on (after retries)."""
    for _ in range(200):
        techniques = _techniques(evasion, lang, rng)
        if category == "third_party_pii":
            kind, term = _pii_value(rng, techniques)
            template = rng.choice(PII[kind][lang])
        else:
            bank = rng.choice(BANKS[(category, lang)])
            template = rng.choice(bank.templates)
            term = _fill(rng.choice(bank.terms), rng, lang)
        plain = _evade(term, [], rng)
        target = _targets(term)
        if any(
            _evade(target, [t], random.Random(0)) == target
            for t in techniques
            if t != "traditional"
        ):
            continue  # a technique had nothing to act on in this phrase
        if "fullwidth" in techniques and not any(ch.isascii() and ch.isalnum() for ch in target):
            continue
        evaded = _evade(term, techniques, rng)
        if "traditional" in techniques:
            affected = template if category == "third_party_pii" else plain
            if lang != "zh" or to_traditional(affected) == affected:
                continue
            before, after = template.split("{T}")
            text = to_traditional(before) + to_traditional(evaded) + to_traditional(after)
        else:
            text = template.replace("{T}", evaded)
        return Message(lang, text, "violation", category, evasion)
    return None


def clean_messages(rng: random.Random) -> list[Message]:
    out: list[Message] = []
    for category, by_lang in CLEAN.items():
        for lang, texts in by_lang.items():
            for template in texts:
                order, land, hot = order_number(rng), landline(rng), hotline(rng)
                own = rng.choice(OWN_ADDRESSES)
                text = template.format(order=order, land=land, hot=hot, own=own, rep=SENDER)
                kind = category
                if "{own}" in template and own != SENDER:
                    # A shared address of the company: nobody's personal data, yet not
                    # the sender's own either; counted apart so the two can be told apart.
                    kind = "lookalike_company_email"
                out.append(Message(lang, text, "clean", kind, "none"))
    # The same innocent text written in traditional characters or with full-width
    # digits must stay innocent once normalised.
    variants: list[Message] = []
    for message in out:
        if message.lang != "zh" or message.category == "plain":
            continue
        chance = 0.5 if message.category == "negation" else 0.25
        if rng.random() < chance and to_traditional(message.text) != message.text:
            variants.append(
                Message(
                    "zh", to_traditional(message.text), "clean", message.category, "traditional"
                )
            )
        elif any(ch.isdigit() for ch in message.text) and rng.random() < 0.3:
            variants.append(
                Message("zh", to_fullwidth(message.text), "clean", message.category, "fullwidth")
            )
    return out + variants


def build() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    messages: list[Message] = []
    turn = 0
    for evasion, count in VIOLATION_PLAN.items():
        made = 0
        while made < count:
            category = CATEGORIES[turn % len(CATEGORIES)]
            preferred = "zh" if (turn // len(CATEGORIES)) % 2 == 0 else "en"
            turn += 1
            for lang in (preferred, "en" if preferred == "zh" else "zh"):
                message = violation(category, lang, evasion, rng)
                if message is not None and message.text not in {m.text for m in messages}:
                    messages.append(message)
                    made += 1
                    break
    messages.extend(clean_messages(rng))
    rng.shuffle(messages)
    return [
        {
            "id": f"m{n:04d}",
            "lang": m.lang,
            "text": m.text,
            "label": m.label,
            "category": m.category,
            "evasion": m.evasion,
        }
        for n, m in enumerate(messages, start=1)
    ]


def render(records: Sequence[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def counts(records: Sequence[dict[str, str]]) -> str:
    """The README's tables: violations per category, evasion and language; clean messages."""
    v = [r for r in records if r["label"] == "violation"]
    c = [r for r in records if r["label"] == "clean"]

    def n(rows: Sequence[dict[str, str]], **match: str) -> int:
        return sum(all(r[k] == want for k, want in match.items()) for r in rows)

    out = ["| category | zh | en | total |", "|---|---:|---:|---:|"]
    for k in CATEGORIES:
        out.append(
            f"| `{k}` | {n(v, category=k, lang='zh')} | {n(v, category=k, lang='en')} "
            f"| {n(v, category=k)} |"
        )
    out += ["", "| evasion | " + " | ".join(CATEGORIES) + " | zh | en | total |"]
    out.append("|---|" + "---:|" * (len(CATEGORIES) + 3))
    for e in EVASIONS:
        cells = [n(v, evasion=e, category=k) for k in CATEGORIES]
        out.append(
            f"| `{e}` | " + " | ".join(map(str, cells)) + f" | {n(v, evasion=e, lang='zh')} "
            f"| {n(v, evasion=e, lang='en')} | {n(v, evasion=e)} |"
        )
    out += ["", "| clean category | zh | en | written with an evasion | total |"]
    out.append("|---|---:|---:|---|---:|")
    for k in sorted({r["category"] for r in c}, key=lambda k: (k != "plain", k)):
        rows = [r for r in c if r["category"] == k]
        evaded = sorted({r["evasion"] for r in rows} - {"none"})
        marks = ", ".join(f"{e} {n(rows, evasion=e)}" for e in evaded) or "-"
        out.append(
            f"| `{k}` | {n(rows, lang='zh')} | {n(rows, lang='en')} | {marks} | {len(rows)} |"
        )
    out += ["", f"{len(records)} messages: {len(v)} violations, {len(c)} clean; "
            f"{n(records, lang='zh')} zh, {n(records, lang='en')} en."]  # fmt: skip
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--counts", action="store_true", help="print the README's tables")
    args = parser.parse_args(argv)
    if args.counts:
        print(counts(build()))
        return 0
    text = render(build())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} differs from what {Path(__file__).name} writes", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} messages to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
