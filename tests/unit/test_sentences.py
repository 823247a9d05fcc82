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
        ("??? !!", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
