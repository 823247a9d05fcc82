"""The Python client: ``from pipeline.client import Client``.

    with Client() as client:
        answer = client.ask({"task": "faq", "text": "How do I reset my password?"})
        print(answer.result["reply"])

The implementation lives with the rest of the Kafka code in ``pipeline.runtime.client``.
"""

from pipeline.messages import Answer, Request
from pipeline.runtime.client import AnswerTimeoutError, Client

__all__ = ["Answer", "AnswerTimeoutError", "Client", "Request"]
