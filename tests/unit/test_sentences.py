"""faq's sub-question splitting, English and Chinese."""

from __future__ import annotations

import pytest

from pipeline.tasks.sentences import split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "How do I reset my password? And can I change my delivery address?",
            ["How do I reset my password?", "And can I change my delivery address?"],
        ),
        ("我怎么重置密码？可以改地址吗？", ["我怎么重置密码？", "可以改地址吗？"]),
        ("我的订单在哪里。能退货吗！", ["我的订单在哪里。", "能退货吗！"]),
        ("Where is my order", ["Where is my order"]),
        # English joining words after a comma start a new question when a question follows them.
        ("where is my parcel, also can I cancel it", ["where is my parcel", "also can I cancel it"]),
        ("Do you ship to Canada, plus do you take PayPal?", ["Do you ship to Canada", "plus do you take PayPal?"]),
        ("I want it in blue, plus a bag", ["I want it in blue, plus a bag"]),  # no question follows
        ("I ordered shoes, and they are late", ["I ordered shoes, and they are late"]),  # never "and" alone
        ("Where is my box, btw how do i get an invoice", ["Where is my box", "btw how do i get an invoice"]),
        ("I paid 2.5 EUR too much. Can I get it back?", ["I paid 2.5 EUR too much.", "Can I get it back?"]),
        (
            "Can I pay with e.g. PayPal or i.e. a wallet? What about gift cards?",
            ["Can I pay with e.g. PayPal or i.e. a wallet?", "What about gift cards?"],
        ),
        ("Mr. Smith ordered shoes, bags etc. and a hat", ["Mr. Smith ordered shoes, bags etc. and a hat"]),
        ("See example.com for v1.2 details. Thanks", ["See example.com for v1.2 details.", "Thanks"]),
        ("Really?! Are you sure...  Why", ["Really?!", "Are you sure...", "Why"]),
        ("first line\nsecond line;third", ["first line", "second line;", "third"]),
        ('He said "where is it?" Then left.', ['He said "where is it?"', "Then left."]),
        ("Hello 你好？ where is my order? 谢谢", ["Hello 你好？", "where is my order?", "谢谢"]),
        ("我的快递到哪了？还有，退款多久能到账？", ["我的快递到哪了？", "还有，退款多久能到账？"]),
        ("我的快递到哪了，还有退款多久能到账", ["我的快递到哪了", "还有退款多久能到账"]),
        ("怎么开发票，另外能用 PayPal 付款吗？", ["怎么开发票", "另外能用 PayPal 付款吗？"]),
        (
            "订单能取消吗, 顺便问一下运费多少；礼品卡会过期吗",
            ["订单能取消吗", "顺便问一下运费多少；", "礼品卡会过期吗"],
        ),
        ("可以退货嗎，還有退款要多久", ["可以退货嗎", "還有退款要多久"]),
        ("地址写错了、对了发票怎么开！", ["地址写错了", "对了发票怎么开！"]),
        ("还有就是优惠码用不了", ["还有就是优惠码用不了"]),
        # the rule is lexical: a statement that goes on after a comma is cut too
        ("我买了鞋子，还有一件外套没到", ["我买了鞋子", "还有一件外套没到"]),
        # inside a clause a joining word is an ordinary word: no cut
        ("这款 iPhone 15 还有货吗？另外的颜色呢", ["这款 iPhone 15 还有货吗？", "另外的颜色呢"]),
        ("红色的还有吗，黑色的也行", ["红色的还有吗，黑色的也行"]),
        ("??? !!", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
